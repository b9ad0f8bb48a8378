# official: EMOv2/downstreams/seg/configs/segformer/segformer_emo2_5M-160k_ade20k-512x512.py
_base_ = ['./_base_/models/segformer_emov2.py', './_base_/ade20k_emov2_160k.py']

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_5M_224.pth'

model = dict(
    backbone=dict(arch='5m', init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[48, 72, 160, 288], channels=288))
