"""ONNX runtime: an ``.onnx`` file run with ONNX Runtime on the CPU."""

import json

from keras_vit.export.geometry import METADATA_NAME
from keras_vit.export.runtimes.base import Predictor
from keras_vit.utils.validation import check_class_names


class ONNXPredictor(Predictor):
    """An ``.onnx`` file run with ONNX Runtime (CPU) behind the `Predictor`
    interface. Files from `export_onnx` carry their class names, geometry
    and output kind; for other ONNX files the input must be float32 pixels
    (B, H, W, C) in [0, 255] and the output (B, num_classes)
    probabilities.

    Args:
        path: the file.
        class_names: optional names overriding the file's metadata.
        num_threads: optional int, ONNX Runtime's intra-op threads (default:
            its own choice, one per physical core).

    Example:
    >>> ONNXPredictor("digits.onnx", num_threads=1).predict(images).shape
    (8, 10)
    """

    kind = "onnx"

    def __init__(self, path, class_names=None, num_threads=None):
        import onnxruntime as ort

        if num_threads is not None and (not isinstance(num_threads, int) or isinstance(num_threads, bool)
                                        or num_threads <= 0):
            raise ValueError(f"`num_threads` must be a positive int. Received: num_threads={num_threads!r}")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf
            raise ValueError(f"ONNX Runtime cannot load {path}: {err}") from err
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
        meta = json.loads(raw) if raw else {}
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not isinstance(shape[-1], int):
            raise ValueError(f"{path}: expected one input of shape (batch, height, width, channels); "
                             f"got {[(i.name, i.shape) for i in inputs]}.")
        self.input_name, self.output_name = inputs[0].name, meta.get("outputs", outputs[0].name)
        fixed = tuple(shape[1:3]) if all(isinstance(d, int) for d in shape[1:3]) else None
        num_classes = outputs[0].shape[-1]
        names = class_names or meta.get("class_names")
        if names is None:
            if not isinstance(num_classes, int):
                raise ValueError(f"{path}: the number of classes is not fixed in the graph; pass `class_names`.")
            names = check_class_names(None, num_classes)
        super().__init__(
            path, names, fixed, meta.get("size") or fixed, shape[-1], meta.get("patch_size"), meta.get("stride"),
            meta.get("preprocessing"),
        )

    def _run(self, images):
        return self.session.run([self.output_name], {self.input_name: images.astype("float32", copy=False)})[0]
