# official: EMOv2/downstreams/det/configs/ssd/ssdlite_emo2_2M_8gpu_2lr_512_coco.py
_base_ = './_base_/ssdlite_emov2_512.py'

checkpoint_file = 'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_2M_224.pth'

model = dict(
    backbone=dict(arch='2m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=(120, 200), out_channels=(120, 200, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(120, 200, 512, 256, 256, 128)))
