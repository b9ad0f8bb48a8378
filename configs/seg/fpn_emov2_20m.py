# official: EMOv2/downstreams/seg/configs/sem_fpn/fpn_emo2_20M-160k_ade20k-512x512.py
_base_ = ['./_base_/models/fpn_emov2.py', './_base_/ade20k_emov2_160k.py']

# no official EMOv2-20M ImageNet weights exist: the file of your own ImageNet training
checkpoint_file = 'checkpoints/emov2_20m_in1k.pth'

model = dict(
    backbone=dict(arch='20m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 320, 448]))
