# official: EMO/down-stream-tasks/mmdetection/configs/retinanet_emo/retinanet_emo_5M_fpn_1x_coco.py
_base_ = './_base_/retinanet_emo.py'

checkpoint_file = 'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_5M/net.pth'

model = dict(
    backbone=dict(arch='5m', window_size=10, init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[48, 72, 160, 288]))
