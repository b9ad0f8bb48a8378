# official: EMO/down-stream-tasks/mmdetection/configs/retinanet_emo/retinanet_emo_1M_fpn_1x_coco.py
_base_ = './_base_/retinanet_emo.py'

checkpoint_file = 'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_1M/net.pth'

model = dict(
    backbone=dict(arch='1m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[32, 48, 80, 168]))
