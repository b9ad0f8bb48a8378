"""EMO / EMOv2 backbones, their building blocks, official-weight loading and model building for any config."""
from emo_mm.models.backbones import EMO, EMOv2
from emo_mm.models.build import (TensorForward, build_model, default_input_shape, get_backbone, load_config,
                                 model_kind, switch_to_deploy)
from emo_mm.models.pretrained import (ARCH_NAMES, build_backbone, convert_hint, convert_official, load_pretrained,
                                      remap_official_state_dict)
from emo_mm.models.variants import VARIANTS

__all__ = [
    'EMO', 'EMOv2', 'TensorForward', 'build_model', 'default_input_shape', 'get_backbone', 'load_config',
    'model_kind', 'switch_to_deploy', 'ARCH_NAMES', 'build_backbone', 'convert_hint', 'convert_official',
    'load_pretrained', 'remap_official_state_dict', 'VARIANTS'
]
