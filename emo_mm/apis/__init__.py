"""What the tools run: train / test with any config, the preflight checks, inference on images."""
from emo_mm.apis.inference import ImageReadError, InferResult, OnnxInferencer, build_inferencer, infer, read_image_bgr
from emo_mm.apis.preflight import PreflightError, check
from emo_mm.apis.runner import (add_common_args, build_runner, exit_if_checkpoint_unusable, prepare_config,
                                resolve_config_path, test, train)

__all__ = [
    'ImageReadError', 'InferResult', 'OnnxInferencer', 'build_inferencer', 'infer', 'read_image_bgr',
    'PreflightError', 'check', 'add_common_args', 'build_runner', 'exit_if_checkpoint_unusable', 'prepare_config',
    'resolve_config_path', 'test', 'train'
]
