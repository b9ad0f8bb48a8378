# official: EMOv2/downstreams/det/configs/mask_rcnn/mask-rcnn_emo2_5M_fpn_1x_coco.py
_base_ = './_base_/mask_rcnn_emov2.py'

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_5M_224.pth'

model = dict(
    backbone=dict(arch='5m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[48, 72, 160, 288]))
