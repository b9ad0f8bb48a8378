"""Helpers every part of emo_mm uses: checkpoint reads, config walking, the codebase of a config."""
from emo_mm.utils.checkpoint_io import CheckpointError, load_local_checkpoint, zip_checkpoint_problem
from emo_mm.utils.codebase import CODEBASES, codebase_of
from emo_mm.utils.config import (dataset_metainfo, dataset_pipelines, drop_pretrained, leaf_datasets,
                                 pretrained_init_cfgs, test_pipelines, type_name)

__all__ = [
    'CheckpointError', 'load_local_checkpoint', 'zip_checkpoint_problem', 'CODEBASES', 'codebase_of',
    'dataset_metainfo', 'dataset_pipelines', 'drop_pretrained', 'leaf_datasets', 'pretrained_init_cfgs',
    'test_pipelines', 'type_name'
]
