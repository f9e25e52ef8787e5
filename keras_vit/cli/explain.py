"""`keras-vit explain`: a model's attention rollout over an image, as a PNG."""

import os

from keras_vit.explain import HEAD_FUSIONS


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "explain", help="Draw a model's attention rollout over an image (PNG).",
        description="Writes the attention rollout (Abnar & Zuidema) of IMAGE as a PNG overlay. The image "
        "is prepared as the model was trained (its channels, size and interpolation).")
    parser.add_argument("image", help="an image file (PNG, JPEG, ...)")
    parser.add_argument("--model", required=True,
                        help="a .keras model, a preset directory, hf://owner/repo, or a checkpoint file")
    parser.add_argument("--output", "-o", help="PNG to write (default: IMAGE_attention.png)")
    parser.add_argument("--head-fusion", default="mean", choices=HEAD_FUSIONS)
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1]")
    parser.add_argument("--cmap", default="jet", help="matplotlib colormap")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_vit.explain import explain
    from keras_vit.models.preset_io import load_model

    model = load_model(args.model)
    output = args.output or os.path.splitext(os.path.basename(args.image))[0] + "_attention.png"
    path, prediction = explain(args.image, model, output, args.head_fusion, args.alpha, args.cmap)
    print(f"Wrote {path}" + ("" if prediction is None else f" (predicted class {prediction})"))
    return 0
