# official: EMO/down-stream-tasks/mmdetection/configs/ssd_emo/ssdlite_emo_2M_pretrain_coco.py
_base_ = './_base_/ssdlite_emo.py'

checkpoint_file = 'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_2M/net.pth'

model = dict(
    backbone=dict(arch='2m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=(120, 200), out_channels=(120, 200, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(120, 200, 512, 256, 256, 128)))
