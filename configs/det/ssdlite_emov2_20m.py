# official: EMOv2/downstreams/det/configs/ssd/ssdlite_emo2_20M_8gpu_2lr_coco.py
_base_ = './_base_/ssdlite_emov2.py'

# no official EMOv2-20M ImageNet weights exist: the file of your own ImageNet training
checkpoint_file = 'checkpoints/emov2_20m_in1k.pth'

model = dict(
    backbone=dict(arch='20m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=(320, 448), out_channels=(320, 448, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(320, 448, 512, 256, 256, 128)))
