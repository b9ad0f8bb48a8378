# official: EMOv2/downstreams/seg/configs/pspnet/pspnet_emo2_5M-80k_ade20k-512x512.py
_base_ = ['./_base_/models/pspnet_emov2.py', './_base_/ade20k_emov2_80k.py']

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_5M_224.pth'

model = dict(
    backbone=dict(arch='5m', init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=288),  # C4
    auxiliary_head=dict(in_channels=160))  # C3
