# official: EMOv2/downstreams/seg/configs/sem_fpn/fpn_emo2_2M-160k_ade20k-512x512.py
_base_ = ['./_base_/models/fpn_emov2.py', './_base_/ade20k_emov2_160k.py']

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_2M_224.pth'

model = dict(
    backbone=dict(arch='2m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[32, 48, 120, 200]))
