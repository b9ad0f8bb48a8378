# PSPNet (PSP head, output stride 32, no dilation) on an EMOv2 backbone, ADE20K 150 classes: the EMO (v1) base with
# the backbone swapped. The variant files set the EMOv2 size (arch, window_size, init checkpoint) and head inputs.
_base_ = ['./pspnet_emo.py']

model = dict(
    backbone=dict(
        type='emo_mm.EMOv2',
        window_size=10,
        init_cfg=dict(checkpoint='checkpoints/emov2_1m_in1k.pth')),
    decode_head=dict(in_channels=180))  # C4 of EMOv2-1M
