# official: EMOv2/downstreams/seg/configs/pspnet/pspnet_emo2_20M-80k_ade20k-512x512.py
_base_ = ['./_base_/models/pspnet_emov2.py', './_base_/ade20k_emov2_80k.py']

# no official EMOv2-20M ImageNet weights exist: the file of your own ImageNet training
checkpoint_file = 'checkpoints/emov2_20m_in1k.pth'

model = dict(
    backbone=dict(arch='20m', init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=448),  # C4
    auxiliary_head=dict(in_channels=320))  # C3
