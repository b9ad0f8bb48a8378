"""ONNX deployment: export (backbones, classifiers, end-to-end detectors and segmentors), checks against
PyTorch in onnxruntime, and the onnxruntime runtime that needs no model code.

    from emo_mm.deploy import OnnxModel
    model = OnnxModel('ssdlite_emo_1m.onnx')
    res = model.predict(cv2.imread('demo.jpg'))   # BGR uint8, any size
"""
from emo_mm.deploy.export import end_to_end_module, export_end_to_end, export_onnx, flatten_outputs, set_metadata
from emo_mm.deploy.metadata import deploy_metadata
from emo_mm.deploy.runtime import OnnxModel, Preprocess, ort_session, paste_masks
from emo_mm.deploy.verify import (OUTRIGHT_SHARE, check_onnx, compare_end_to_end, disagreements, match_detections,
                                  unexplained_detections)

__all__ = [
    'export_onnx', 'export_end_to_end', 'end_to_end_module', 'flatten_outputs', 'set_metadata', 'deploy_metadata',
    'OnnxModel', 'Preprocess', 'ort_session', 'paste_masks', 'check_onnx', 'compare_end_to_end', 'disagreements',
    'match_detections', 'unexplained_detections', 'OUTRIGHT_SHARE'
]
