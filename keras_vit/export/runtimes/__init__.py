"""The `Predictor` of each runtime: `base` (the interface and its input
checks), `keras_model` (a ``.keras`` file or a preset, run by Keras),
`tf_graph` (a SavedModel, a ``.tflite`` file run by LiteRT), `onnx_graph`
(an ``.onnx`` file run by ONNX Runtime). `keras_vit.export.predictor`
picks one for an artifact (`load_predictor`)."""
