# SSDLite 512x512 with an EMOv2 backbone (official `ssd/ssdlite_emo2_xM_8gpu_2lr_512_coco.py`): ./ssdlite_emov2.py
# with only the input size changed (train Resize after MinIoURandomCrop and test Resize: 512x512, no keep-ratio).
# Anchors are NOT rescaled (same strides / min / max sizes as at 320), as in the official configs.
_base_ = './ssdlite_emov2.py'

input_size = 512
train_pipeline = [dict(t, scale=(input_size, input_size)) if t['type'] == 'Resize' else t
                  for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=(input_size, input_size)) if t['type'] == 'Resize' else t
                 for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
