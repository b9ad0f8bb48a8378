"""Data: the embedded mini datasets (``--mini``) and the checks that name a broken file instead of crashing."""
from emo_mm.datasets.checks import (BadDataError, CheckedLoading, annotation_problem, bad_data_message,
                                    exit_on_bad_data, guard_pipelines, image_file_problem, unguard_pipelines)
from emo_mm.datasets.mini import MINI_ROOT, apply_mini, to_mini_path

__all__ = [
    'BadDataError', 'CheckedLoading', 'annotation_problem', 'bad_data_message', 'exit_on_bad_data',
    'guard_pipelines', 'image_file_problem', 'unguard_pipelines', 'MINI_ROOT', 'apply_mini', 'to_mini_path'
]
