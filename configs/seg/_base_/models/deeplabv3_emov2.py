# DeepLabv3 (ASPP head, output stride 32, no dilation) on an EMOv2 backbone, ADE20K 150 classes: the EMO (v1) base
# with the backbone swapped, shaped for EMOv2-1M; the variant files set the size, its channels and weights.
_base_ = ['./deeplabv3_emo.py']

model = dict(
    backbone=dict(type='emo_mm.EMOv2', window_size=10),
    decode_head=dict(in_channels=180))  # C4 of EMOv2-1M
