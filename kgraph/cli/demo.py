"""``kgraph demo``: train an MLP, export it, run the exported files."""
import sys

from .common import UsageError, non_negative_int, positive_int


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="train an MLP on built-in synthetic data, export it, run the exported file",
        description="Train an MLP (K.gradients + Adam through K.function) on seeded synthetic "
                    "data, printing the loss as it falls; export it for inference (mlp.onnx), as "
                    "a training step (mlp_train_step.onnx) and a model card (mlp.md); load both "
                    "files in fresh onnxruntime sessions and report accuracy and agreement with "
                    "kgraph.  Output problems are reported before training starts.")
    parser.add_argument("--out", default="kgraph-demo", metavar="DIR",
                        help="directory for the exported files (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=20, metavar="N",
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N",
                        help="minibatch size (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of data, weights and shuffling, >= 0 (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    return parser


def run(args):
    from .. import demo

    try:
        demo.prepare_output(args.out, force=args.force)
        result = demo.run(out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, force=args.force)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not result["losses"][-1] < result["losses"][0] or result["max_difference"] > 1e-5:
        print("kgraph demo: the loss did not fall or the exported model disagrees", file=sys.stderr)
        return 1
    return 0
