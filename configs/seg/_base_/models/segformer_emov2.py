# SegFormer all-MLP head over stages 1-4 of an EMOv2 backbone, ADE20K 150 classes: mmseg's segformer_mit-b0 model
# with the MiT backbone replaced; shaped for EMOv2-1M (the variant files set the size, its channels and weights).
_base_ = ['mmseg::_base_/models/segformer_mit-b0.py']

model = dict(
    data_preprocessor=dict(size=(512, 512)),  # pad training crops (and smaller images) to 512x512
    pretrained=None,  # EncoderDecoder would push a model-level pretrained into the backbone
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),
        frozen_stages=-1, norm_eval=False, init_cfg=dict(type='Pretrained', prefix='backbone.')),
    # channels: the official configs tie the MLP width to the size (180 for 1M, 288 from 2M on), not MiT-B0's 256
    decode_head=dict(in_channels=[32, 48, 80, 180], channels=180, num_classes=150))
