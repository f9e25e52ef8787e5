"""`keras-vit predict`: top-k classes of image files with any artifact."""

from keras_vit.cli.common import format_table, positive_int, read_class_names


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="Print the top-k classes of images with a .keras, SavedModel, .tflite, .onnx model or a preset.")
    parser.add_argument("model", help="a .keras file, a SavedModel directory, a .tflite or .onnx file, or a preset: "
                        "a known pretrained name, hf://owner/repo[@rev], a preset directory or a checkpoint file")
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--top-k", type=positive_int, default=3, help="classes per image (>= 1)")
    parser.add_argument("--resize", action="store_true",
                        help="resize images to the model's size (with its recorded interpolation); models "
                        "that record timm's crop_pct always resize and centre-crop")
    parser.add_argument("--class-names", help="a text file with one name per line, or 'a,b,c'")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_vit.export import load_predictor, predict_files

    predictor = load_predictor(args.model, class_names=read_class_names(args.class_names))
    results = predict_files(predictor, args.inputs, top_k=args.top_k, resize=args.resize)
    k = min(args.top_k, len(predictor.class_names))
    rows = [[str(f)] + [f"{name} ({p:.3f})" for name, p in top] for f, top in results]
    print(format_table(["image"] + [f"top-{i + 1}" for i in range(k)], rows))
    return 0
