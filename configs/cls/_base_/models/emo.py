# ImageClassifier on an EMO backbone, reproducing the official classifier:
#   backbone stages -> final LayerNorm over C4 (final_norm=True, keys backbone.norm.norm.*) -> global mean pool
#   -> Linear(C4, 1000) (keys head.fc.*). Label-smoothing CE 0.1 (timm LabelSmoothingCrossEntropy; mode
#   'original' = (1 - 0.1) * one-hot + 0.1 / 1000). The variant files set arch / in_channels.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='emo_mm.EMO',
        arch='1m',
        window_size=7,
        out_indices=(4, ),
        final_norm=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=168,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original', loss_weight=1.0),
        topk=(1, 5),
        # official init: trunc_normal(std 0.02) weight, zero bias
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)),
)
