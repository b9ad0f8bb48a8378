# official: EMO/down-stream-tasks/mmdetection/configs/ssd_emo/ssdlite_emo_1M_pretrain_coco.py
_base_ = './_base_/ssdlite_emo.py'

checkpoint_file = 'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_1M/net.pth'

model = dict(
    backbone=dict(arch='1m', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=(80, 168), out_channels=(80, 168, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(80, 168, 512, 256, 256, 128)))
