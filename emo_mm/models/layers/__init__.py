"""Building blocks of EMO and EMOv2: conv blocks, window attention, BN folding and oneDNN deploy kernels."""
from emo_mm.models.layers.conv import (EPS, ConvNormAct, DropPath, LayerNorm2d, LayerScale2d, SqueezeExcite, build_act,
                                       build_norm)
from emo_mm.models.layers.fusion import bn_affine, compose_pointwise_convs, fold_affine_into_next_conv, fold_bn_into_conv
from emo_mm.models.layers.onednn import PackedWeight, deploy_act, deploy_conv, onednn_inference
from emo_mm.models.layers.window_attention import ew_mhsa, window_partition, window_reverse

__all__ = [
    'EPS', 'ConvNormAct', 'DropPath', 'LayerNorm2d', 'LayerScale2d', 'SqueezeExcite', 'build_act', 'build_norm',
    'bn_affine', 'compose_pointwise_convs', 'fold_affine_into_next_conv', 'fold_bn_into_conv', 'PackedWeight',
    'deploy_act', 'deploy_conv', 'onednn_inference', 'ew_mhsa', 'window_partition', 'window_reverse'
]
