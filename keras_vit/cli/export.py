"""`keras-vit export`: a .keras model to a SavedModel, a .tflite or an .onnx file."""

from pathlib import Path

from keras_vit.cli.common import positive_int, read_class_names, size_of

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="Export a .keras model as a SavedModel, a .tflite or an .onnx file.",
        description="Export a .keras model as a SavedModel (serving signatures for raw uint8 images "
        "and encoded JPEG/PNG bytes), a .tflite file (float32, float16, dynamic or int8) or an .onnx file "
        "for ONNX Runtime (float32 pixels in, probabilities out; dynamic batch).",
    )
    parser.add_argument("model", help="the .keras file")
    parser.add_argument("--format", default="savedmodel", choices=FORMATS, help="artifact kind (default savedmodel)")
    parser.add_argument("--quantization", default="float32", choices=QUANTIZATIONS,
                        help="tflite only (default float32)")
    parser.add_argument("--output", "-o", help="artifact path (default: beside the model)")
    parser.add_argument("--class-names", help="a text file with one name per line, or 'a,b,c'")
    parser.add_argument("--image-size", type=positive_int, nargs="+", metavar="PX",
                        help="H [W]: size for a model built with image_size=None (required for tflite)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="SavedModel: classes in the top-k outputs")
    parser.add_argument("--representative-data", nargs="+", metavar="PATH",
                        help="int8: training images (files, folders, globs; resized to the model) or one .npy array")
    parser.add_argument("--num-calibration-samples", type=positive_int, default=100)
    parser.add_argument("--opset", type=positive_int, default=None,
                        help="onnx only: the ONNX opset (default 17; 13 to 18)")
    parser.set_defaults(run=run)
    return parser


def _representative(items, model, geo):
    """Images for int8 calibration from a .npy file or image files/folders/globs."""
    import dataclasses

    import numpy as np

    from keras_vit import preprocessing
    from keras_vit.export.geometry import image_settings
    from keras_vit.export.predictor import find_images

    if not items:
        return None
    if len(items) == 1 and items[0].endswith(".npy"):
        return np.load(items[0])
    settings = dataclasses.replace(image_settings(model, geo), image_size=geo["size"])
    return np.stack([preprocessing.load_image(f, settings) for f in find_images(items)])


def run(args):
    from keras_vit.export import export_saved_model, export_tflite, model_geometry
    from keras_vit.utils.io import load_keras_file

    if not args.model.endswith(".keras") or not Path(args.model).is_file():
        raise ValueError(f"`model` must be an existing .keras file. Received: {args.model!r}")
    if len(args.image_size or ()) > 2:
        raise ValueError(f"--image-size takes H or H W. Received: {args.image_size}")
    model = load_keras_file(args.model)
    names = read_class_names(args.class_names)
    image_size = tuple(args.image_size) * (2 if len(args.image_size) == 1 else 1) if args.image_size else None
    stem = Path(args.model).with_suffix("")
    if args.opset is not None and args.format != "onnx":
        raise ValueError(f"--opset applies to --format onnx only. Received: --format {args.format}")
    if args.format == "onnx":
        from keras_vit.export.onnx import DEFAULT_OPSET, export_onnx

        if args.quantization != "float32":
            raise ValueError(f"--quantization={args.quantization!r} applies to --format tflite only.")
        output = args.output or f"{stem}.onnx"
        export_onnx(model, output, opset=args.opset or DEFAULT_OPSET, class_names=names, image_size=image_size)
    elif args.format == "savedmodel":
        if args.quantization != "float32":
            raise ValueError(f"--quantization={args.quantization!r} applies to --format tflite only.")
        output = args.output or f"{stem}_savedmodel"
        export_saved_model(model, output, class_names=names, image_size=image_size, top_k=args.top_k)
    else:
        output = args.output or f"{stem}_{args.quantization}.tflite"
        data = _representative(args.representative_data, model, model_geometry(model, image_size))
        export_tflite(model, output, args.quantization, representative_data=data,
                      num_calibration_samples=args.num_calibration_samples, image_size=image_size,
                      class_names=names)
    print(f"wrote {output} ({size_of(output) / 1024:.1f} KiB)")
    return 0
