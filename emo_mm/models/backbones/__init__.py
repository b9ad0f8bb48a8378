from .emo import EMO
from .emov2 import EMOv2

__all__ = ['EMO', 'EMOv2']
