# official: EMO/down-stream-tasks/mmsegmentation/configs/pspnet_emo/pspnet_emo_5M_512x512_80k_ade20k.py
_base_ = ['./_base_/models/pspnet_emo.py', './_base_/ade20k_emo_80k.py']

checkpoint_file = 'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_5M/net.pth'

model = dict(
    backbone=dict(arch='5m', window_size=16, init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=288),  # C4
    auxiliary_head=dict(in_channels=160))  # C3
