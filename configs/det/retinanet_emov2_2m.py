# official: EMOv2/downstreams/det/configs/retinanet/retinanet_emo2_2M_fpn_1x_coco.py
_base_ = './_base_/retinanet_emov2.py'

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_2M_224.pth'

model = dict(
    backbone=dict(arch='2m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[32, 48, 120, 200]))
