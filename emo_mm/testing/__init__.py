"""Helpers for checks without trained weights and for the memorisation runs (tests, demo, benchmarks)."""
from emo_mm.testing.lively_init import live_layer_scales, lively_init
from emo_mm.testing.memorise import (NO_PHOTOMETRIC_DISTORTION, SSDLITE_FIT_EPOCHS, SSDLITE_FIT_LR, coco_fit_options,
                                     index_of_type, step_key, write_coco_subset)

__all__ = [
    'lively_init', 'live_layer_scales', 'NO_PHOTOMETRIC_DISTORTION', 'SSDLITE_FIT_EPOCHS', 'SSDLITE_FIT_LR',
    'coco_fit_options', 'index_of_type', 'step_key', 'write_coco_subset'
]
