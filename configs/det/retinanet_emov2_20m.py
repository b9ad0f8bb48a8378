# official: EMOv2/downstreams/det/configs/retinanet/retinanet_emo2_20M_fpn_1x_coco.py
_base_ = './_base_/retinanet_emov2.py'

# no official EMOv2-20M ImageNet weights exist: the file of your own ImageNet training
checkpoint_file = 'checkpoints/emov2_20m_in1k.pth'

model = dict(
    backbone=dict(arch='20m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[64, 128, 320, 448]))
