"""Deployment: SavedModel, TFLite and ONNX exports and one predictor for every artifact.

- `saved_model`: `export_saved_model` (signatures for uint8 images and for
  encoded bytes, which go through `keras_vit.preprocessing`);
- `tflite`: `export_tflite` (float32, float16, dynamic, int8; builtin ops);
- `onnx`: `export_onnx` (ONNX Runtime; dynamic batch, and dynamic height
  and width for ``image_size=None`` models; TensorFlow backend);
- `predictor`: `load_predictor` for a ``.keras`` file, a SavedModel, a
  ``.tflite`` file (LiteRT) or an ``.onnx`` file (ONNX Runtime),
  `predict_files`, `benchmark`; the predictor classes live in `runtimes`,
  one module per runtime;
- `geometry`: what an artifact records about the model;
- `inference`: `inference_model`, the explicit inference rewrites (LayerNorm
  folds, heads-first attention) that SavedModel export and the Keras
  predictor use.

Every artifact maps raw pixels in [0, 255] to class probabilities. Writes
are atomic (`keras_vit.utils.io.atomic_path`).
"""

from keras_vit.export.geometry import (
    BYTES_SIGNATURE, FORMATS, METADATA_NAME, QUANTIZATIONS, artifact_kind, model_geometry)
from keras_vit.export.onnx import export_onnx, onnx_metadata
from keras_vit.export.predictor import (
    KerasPredictor, ONNXPredictor, Predictor, PresetPredictor, SavedModelPredictor, TFLitePredictor, benchmark,
    find_images, load_predictor, predict_files, read_image)
from keras_vit.export.inference import INFERENCE_REWRITES, inference_model
from keras_vit.export.saved_model import export_saved_model, read_saved_model_metadata
from keras_vit.export.tflite import calibration_samples, export_tflite, tflite_metadata, tflite_op_names

__all__ = [
    "BYTES_SIGNATURE", "FORMATS", "INFERENCE_REWRITES", "METADATA_NAME", "QUANTIZATIONS", "KerasPredictor",
    "ONNXPredictor", "Predictor", "PresetPredictor", "SavedModelPredictor", "TFLitePredictor", "artifact_kind",
    "benchmark", "calibration_samples", "export_onnx", "export_saved_model", "export_tflite", "find_images",
    "inference_model", "load_predictor", "model_geometry", "onnx_metadata", "predict_files", "read_image",
    "read_saved_model_metadata", "tflite_metadata", "tflite_op_names",
]
