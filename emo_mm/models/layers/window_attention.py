"""Efficient window multi-head self-attention (EW-MHSA) of EMO and EMOv2, with its deploy-mode CPU forms.

Zero padding to the window without attention mask and the strided ("remote") and contiguous ("close") window
partitions follow the official implementation. In deploy mode the attention runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, or in CPU inference through a written-out form.
"""
import torch
import torch.nn.functional as F

__all__ = ['window_partition', 'window_reverse', 'ew_mhsa']


# Window attention (EW-MHSA)
#
# A map of padded size (H, W) = (wh * n1, ww * n2) is cut into n1 * n2 windows of wh * ww tokens:
#   'remote' (EMO v1 and EMOv2 EW_MHSA_Remote): b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1
#            (a window holds tokens spaced n1 / n2 pixels apart across the whole map)
#   'close'  (EMOv2 EW_MHSA_Close):             b c (n1 h1) (n2 w1) -> (b n1 n2) c h1 w1
#            (contiguous ws x ws windows)
# Channels are split as (chunks, heads, dim_head), the official '(qk heads dim_head)' order.

def window_partition(x, window, num_heads, mode, chunks=1):
    """(B, chunks*heads*d, H, W) -> (chunks, B*n1*n2, heads, wh*ww, d) with one reshape+permute."""
    part = _partition_view(x, window, num_heads, mode, chunks)
    return part.reshape(chunks, -1, num_heads, window[0] * window[1], part.shape[-1])


def _partition_view(x, window, num_heads, mode, chunks=1):
    """The windows of :func:`window_partition` as a strided view of ``x``: (chunks, B, n1, n2, heads, wh,
    ww, d)."""
    B, C, H, W = x.shape
    wh, ww = window
    n1, n2 = H // wh, W // ww
    d = C // (chunks * num_heads)
    if mode == 'remote':
        return x.reshape(B, chunks, num_heads, d, wh, n1, ww, n2).permute(1, 0, 5, 7, 2, 4, 6, 3)
    if mode == 'close':
        return x.reshape(B, chunks, num_heads, d, n1, wh, n2, ww).permute(1, 0, 4, 6, 2, 5, 7, 3)
    raise ValueError(f"unknown window partition '{mode}' (expected 'remote' or 'close')")


def window_reverse(x, batch, size, window, mode, channels_last=False):
    """Inverse of :func:`window_partition` for one chunk: (B*n1*n2, heads, wh*ww, d) -> (B, heads*d, H, W).

    ``channels_last``: write the map in NHWC memory order (returned as an NCHW view, like a channels_last
    tensor); the copy then moves runs of ``d`` contiguous values, 4-6x faster than gathering NCHW planes.
    """
    H, W = size
    x = _windows_in_map_order(x, batch, size, window, mode, channels_last)
    if channels_last:
        return x.reshape(batch, H, W, -1).permute(0, 3, 1, 2)
    return x.reshape(batch, -1, H, W)


def _windows_in_map_order(x, batch, size, window, mode, channels_last):
    """The view of windows (B*n1*n2, heads, wh*ww, d) whose memory order, once made dense, is the map's:
    (B, h1, n1, w1, n2, heads, d) (remote, NHWC) / (B, n1, h1, n2, w1, heads, d) (close, NHWC), and
    (B, heads, d, h1, n1, w1, n2) / (B, heads, d, n1, h1, n2, w1) for NCHW."""
    H, W = size
    wh, ww = window
    n1, n2 = H // wh, W // ww
    _, heads, _, d = x.shape
    x = x.reshape(batch, n1, n2, heads, wh, ww, d)
    if channels_last:
        return x.permute(0, 4, 1, 5, 2, 3, 6) if mode == 'remote' else x.permute(0, 1, 4, 2, 5, 3, 6)
    return x.permute(0, 3, 6, 4, 1, 5, 2) if mode == 'remote' else x.permute(0, 3, 6, 1, 4, 2, 5)


# score matrices (fp32 bytes) per slice of windows in :func:`_attend_in_slices`: small enough for L2
ATTENTION_SLICE_BYTES = 512 << 10


def _attend_in_slices(q, k, val, scale):
    """Eval-only softmax(q k^T * scale) val, written out on slices of windows whose score matrices fit in
    L2: the CPU inference form of the deploy attention, same values as SDPA within ~1e-6. PyTorch's CPU
    flash attention needs equal q and value head widths; EMOv2's value heads are wider (expanded), so SDPA
    takes its math kernel, which also makes a masked-softmax pass per call; this form skips that pass. For
    EMO v1's equal widths it costs the same as the flash kernel on one thread, but its bmm and softmax also
    use further threads at the small shapes of stage 4, where the flash kernel does not."""
    windows, heads, tokens, width = val.shape
    # (windows * heads) matrices as 3-d views (q, k, val are dense window copies): bmm without matmul's
    # broadcasting ops around it, which count at batch 1
    q, k, val = (t.reshape(windows * heads, tokens, t.shape[-1]) for t in (q, k, val))
    k = k.transpose(1, 2)
    step = max(1, ATTENTION_SLICE_BYTES // (tokens * k.shape[2] * 4))
    if step >= q.shape[0]:
        return torch.bmm(torch.bmm(q, k).mul_(scale).softmax(dim=-1), val).view(windows, heads, tokens, width)
    out = val.new_empty(val.shape)
    for i in range(0, q.shape[0], step):
        attn = torch.bmm(q[i:i + step], k[i:i + step]).mul_(scale)
        torch.bmm(attn.softmax(dim=-1), val[i:i + step], out=out[i:i + step])
    return out.view(windows, heads, tokens, width)


def _cpu_inference_attention(x, attn_drop):
    """Whether attention on ``x`` may take the written-out CPU inference forms (:func:`_attend_in_slices`):
    eval, no autograd, no tracing (ONNX export and the FLOP counter see SDPA) or compiling."""
    return (attn_drop == 0 and x.is_cpu and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def _attend(q, k, val, attn_drop, use_sdpa):
    """softmax(q k^T / sqrt(d)) val over the last two dims: the official form, or with ``use_sdpa`` SDPA
    (training, tracing, non-CPU tensors) and its written-out CPU inference form."""
    scale = q.shape[-1] ** -0.5
    if use_sdpa:
        if _cpu_inference_attention(q, attn_drop):
            return _attend_in_slices(q, k, val, scale)
        return F.scaled_dot_product_attention(q, k, val, dropout_p=attn_drop, scale=scale)
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    if attn_drop > 0:
        attn = F.dropout(attn, attn_drop)
    return attn @ val


def _attention_map_first(x, qk, v, num_heads, window, modes, attn_pre, attn_drop, use_sdpa, channels_last):
    """Run ``qk`` (and ``v``) on the map, then cut q, k and the values into the windows of every mode."""
    B, _, H, W = x.shape
    qk_map = qk(x)
    values = x if attn_pre else v(x)
    if use_sdpa and len(modes) > 1 and _cpu_inference_attention(x, attn_drop):
        return _attend_modes_together(qk_map, values, num_heads, window, modes, channels_last)
    out = None
    for mode in modes:
        q, k = window_partition(qk_map, window, num_heads, mode, chunks=2)
        val = window_partition(values, window, num_heads, mode)[0]
        o = window_reverse(_attend(q, k, val, attn_drop, use_sdpa), B, (H, W), window, mode, channels_last)
        out = o if out is None else out + o
    return out


def _attend_modes_together(qk_map, values, num_heads, window, modes, channels_last):
    """CPU inference form of the summed attention of several partitions (EMOv2's hybrid): the windows of
    all modes are copied into one buffer and attended by one set of calls (at batch 1 EMOv2-1M's stage 3
    has 16 score matrices per mode, so the per-call cost of bmm / softmax counts), and every other mode's
    result is added into the first one's map in place, without a map-order copy of its own."""
    B, _, H, W = qk_map.shape
    qk_parts = [_partition_view(qk_map, window, num_heads, mode, chunks=2) for mode in modes]
    val_parts = [_partition_view(values, window, num_heads, mode)[0] for mode in modes]
    # (chunks, modes, B, n1, n2, heads, wh, ww, d): q and k of all modes each one dense block
    qk_win = qk_map.new_empty((2, len(modes), *qk_parts[0].shape[1:]))
    val_win = values.new_empty((len(modes), *val_parts[0].shape))
    for i, (qk_part, val_part) in enumerate(zip(qk_parts, val_parts)):
        qk_win[:, i] = qk_part
        val_win[i] = val_part
    heads, tokens = num_heads, window[0] * window[1]
    q, k = (t.view(-1, heads, tokens, t.shape[-1]) for t in qk_win)
    o = _attend_in_slices(q, k, val_win.view(-1, heads, tokens, val_win.shape[-1]), q.shape[-1] ** -0.5)
    o = o.view(len(modes), -1, *o.shape[1:])
    out = window_reverse(o[0], B, (H, W), window, modes[0], channels_last)
    dense = out.permute(0, 2, 3, 1) if channels_last else out  # out's memory, in (B, H, W, C) order for NHWC
    for mode, o_mode in zip(modes[1:], o[1:]):
        part = _windows_in_map_order(o_mode, B, (H, W), window, mode, channels_last)
        dense.view(part.shape).add_(part)
    return out


def _attention_tokens_first(x, qk, v, num_heads, window, mode, attn_pre, attn_drop, use_sdpa, channels_last):
    """Same result for a single mode with one window copy instead of three: the input's tokens are put in
    window order once, and since a 1x1 conv is the same map on every token, ``qk`` (and ``v``) on them give
    q, k and the values already in window order, split into heads by views."""
    B, _, H, W = x.shape
    tokens = window_partition(x, window, 1, mode)[0]  # (windows, 1, tokens, C), contiguous
    N, _, L, C = tokens.shape
    token_map = tokens.view(N, L, 1, C).permute(0, 3, 1, 2)  # an (N, C, L, 1) channels_last map
    q, k = qk(token_map).permute(0, 2, 3, 1).reshape(N, L, 2, num_heads, -1).permute(2, 0, 3, 1, 4)
    values = token_map if attn_pre else v(token_map)
    val = values.permute(0, 2, 3, 1).reshape(N, L, num_heads, -1).transpose(1, 2)
    return window_reverse(_attend(q, k, val, attn_drop, use_sdpa), B, (H, W), window, mode, channels_last)


def ew_mhsa(x, qk, v, num_heads, window_size, modes=('remote',), attn_pre=False, attn_drop=0.,
            use_sdpa=False):
    """Window multi-head self-attention of EMO / EMOv2 on a pre-normed map ``x`` (B, C, H, W).

    ``qk`` (C -> 2C) and ``v`` (C -> C_mid, with activation) are the block's 1x1 ConvNormAct modules.
    ``x`` is zero-padded right/bottom to multiples of ``window_size`` (the whole map is one window when
    ``window_size <= 0``); ``qk`` (and ``v`` when ``attn_pre`` is False) run on the padded map, padded
    tokens are not masked. The attention of every partition in ``modes`` is computed with the same q, k, v
    and the results are summed (EMOv2 hybrid = ('remote', 'close')), then cropped back to H, W.
    ``attn_pre=True`` (EMO v1 release) attends over the normed input split into heads and applies ``v``
    afterwards. Scale is ``dim_head ** -0.5`` with ``dim_head = C // num_heads``. ``attn_drop`` is the
    dropout probability to apply now (the caller passes 0 in eval mode). ``use_sdpa`` (deploy mode) runs
    the attention through ``scaled_dot_product_attention`` (in CPU inference through its written-out form,
    all modes in one set of calls; see :func:`_attend_in_slices`) and, with a single mode, cuts the windows
    before the 1x1 convs (:func:`_attention_tokens_first`).
    """
    B, C, H, W = x.shape
    wh, ww = (window_size, window_size) if window_size > 0 else (H, W)
    pad_r, pad_b = (ww - W % ww) % ww, (wh - H % wh) % wh
    # When tracing (ONNX export) always pad and crop: a Python `if` on the sizes would freeze the
    # export-size decision into the graph and break dynamic height/width.
    padded = bool(pad_r or pad_b) or torch.jit.is_tracing()
    # keep the memory layout of the input (channels_last after a LayerNorm2d) for the output map
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    if padded:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    repeats = 1
    if use_sdpa and len(modes) > 1 and x.shape[-2:] == (wh, ww) and not torch.jit.is_tracing():
        # one window covers the map (EMOv2's stage 4 at 224): every partition is the same, attend once
        repeats, modes = len(modes), modes[:1]
    if use_sdpa and len(modes) == 1:
        out = _attention_tokens_first(x, qk, v, num_heads, (wh, ww), modes[0], attn_pre, attn_drop, use_sdpa,
                                      channels_last)
    else:
        out = _attention_map_first(x, qk, v, num_heads, (wh, ww), modes, attn_pre, attn_drop, use_sdpa,
                                   channels_last)
    if repeats > 1:
        out = out.mul_(repeats)  # a fresh map; n * o is exactly the sum of n equal terms
    if padded:
        out = out[:, :, :H, :W]
        if channels_last:  # the crop is a strided view; a dense map keeps the next conv on the fast path
            out = out.contiguous(memory_format=torch.channels_last)
    if attn_pre:
        out = v(out)  # 1x1 conv + act: pointwise, so applying it after un-partition and crop is exact
    return out
