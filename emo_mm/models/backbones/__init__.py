from emo_mm.models.backbones.emo import EMO
from emo_mm.models.backbones.emov2 import EMOv2

__all__ = ['EMO', 'EMOv2']
