# DeepLabv3 (ASPP head, output stride 32, no dilation) on an EMO (v1) backbone, ADE20K 150 classes.
# Heads follow mmseg's stock r50-d8 base (SyncBN, dropout 0.1, align_corners False); EMO overrides: ASPP on
# stage 4 (in_index 3) with 256 channels, auxiliary FCN on stage 3 (in_index 2, 256 channels, loss 0.4).
# Shaped for EMO-1M; the variant files set the size, its window, channels and weights.
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py']

# SyncBN, as in the official configs. On a single non-distributed process mmengine's Runner reverts every
# SyncBatchNorm to BatchNorm (Runner.wrap_model -> revert_sync_batchnorm), so CPU / 1-GPU runs need no change.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=(512, 512))  # pad training crops (and smaller images) to 512x512
model = dict(
    data_preprocessor=data_preprocessor,
    # EncoderDecoder pushes `pretrained` into the backbone: the stock base points at a ResNet URL.
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='emo_mm.EMO',
        arch='1m',
        window_size=7,
        out_indices=(1, 2, 3, 4),  # strides 4/8/16/32, channels C1..C4
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', prefix='backbone.')),  # checkpoint: set by each variant
    decode_head=dict(
        in_channels=168,  # C4
        in_index=3,
        channels=256,
        dilations=(1, 12, 24, 36),
        num_classes=150,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=80,  # C3
        in_index=2,
        channels=256,
        num_classes=150,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))
