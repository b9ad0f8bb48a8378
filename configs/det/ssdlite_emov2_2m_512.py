# SSDLite 512x512 + EMOv2-2M (official `_512` recipe, spec 4.2): everything as ssdlite_emov2_2m.py except
# the input size (train Resize after MinIoURandomCrop and test Resize: 512x512, no keep-ratio; shared values in
# ./_base_/ssdlite_emov2_512.py). Anchors are NOT rescaled (same strides / min / max sizes as at 320), as in the
# official config.
_base_ = './_base_/ssdlite_emov2_512.py'

model = dict(
    backbone=dict(arch='2m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_2m_in1k.pth')),
    neck=dict(in_channels=(120, 200), out_channels=(120, 200, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(120, 200, 512, 256, 256, 128)))
