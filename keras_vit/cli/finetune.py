"""`keras-vit finetune`: fine-tune a pretrained checkpoint on new data."""

import os

from keras_vit.cli.common import non_negative_int, positive_int
from keras_vit.cli.train import augment_arg


def add_parser(subparsers):
    """Registers `keras-vit finetune`."""
    parser = subparsers.add_parser(
        "finetune",
        help="Fine-tune a pretrained checkpoint or preset on an image folder or TFDS name.",
        description="Loads CHECKPOINT with a new head, trains the head with the backbone frozen, "
        "then fine-tunes everything with the training recipe; the model is RUN_DIR/model.keras. "
        "Re-running the same command resumes.")
    parser.add_argument("checkpoint", help="a known pretrained name (e.g. vit_small_patch16_224.augreg_in21k_ft_in1k), "
                        "hf://owner/repo[@rev], a preset directory, or a .npz, .safetensors or .pth/.bin file")
    parser.add_argument("data", help="an image folder (one sub-folder per class), a local TFDS name or 'digits'")
    parser.add_argument("--run-dir", required=True, help="run directory (the model is RUN_DIR/model.keras)")
    parser.add_argument("--num-classes", type=positive_int, help="default: from the data")
    parser.add_argument("--image-size", type=positive_int, help="default: the checkpoint's (positions are resampled)")
    parser.add_argument("--epochs", type=non_negative_int,
                        help="epochs of full fine-tuning (default 3; with --time-budget, as many as fit)")
    parser.add_argument("--frozen-epochs", type=non_negative_int, default=1, help="head-only epochs first (0: none)")
    parser.add_argument("--time-budget", help="e.g. 30m, 2h or seconds: the whole command ends within it "
                        "(the head-only stage takes at most a fifth of it)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--head-learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=0, help="learning-rate warmup of the full stage")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--augment", type=augment_arg, help="augmentation name or strength (see keras-vit train)")
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--test-split", type=float, default=0.2)
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--num-heads", type=positive_int, help="heads, for timm files of non-standard width")
    parser.add_argument("--lora-rank", type=positive_int,
                        help="LoRA of this rank on the attention projections: the full stage trains only "
                        "the LoRA matrices and the head, the rest of the backbone stays frozen")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)
    return parser


def run(args):
    from keras_vit.training.budget import process_start_time
    from keras_vit.training.finetune import fine_tune

    result = fine_tune(
        args.checkpoint, args.data, run_dir=args.run_dir, num_classes=args.num_classes,
        image_size=args.image_size, epochs=args.epochs, frozen_epochs=args.frozen_epochs,
        time_budget=args.time_budget, budget_start=process_start_time(),
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        augment=args.augment, validation_split=args.validation_split, test_split=args.test_split,
        data_dir=args.data_dir, num_heads=args.num_heads, lora_rank=args.lora_rank, seed=args.seed, verbose=2)
    metrics = result.test_metrics or {}
    summary = ", ".join(f"test {k}={v:.4f}" for k, v in metrics.items())
    print(f"Saved {os.path.join(result.run_dir, 'model.keras')} ({result.model.num_classes} classes, "
          f"{len(result.history)} epochs{'; ' + summary if summary else ''})")
    return 0
