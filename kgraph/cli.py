"""The ``kgraph`` command.

    kgraph demo [--out DIR] [--epochs N]   train, export and reload an MLP (the main job)
    kgraph --help
"""
import argparse
import sys


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="kgraph",
        description="kgraph: the Keras 2 backend API as a transpiler to ONNX, trained and run on "
                    "ONNX Runtime.  Use it from Python (import kgraph.backend as K; "
                    "KERAS_BACKEND=kgraph.backend for Keras 2.3.1); this command runs the demo.",
        epilog="Settings: KGRAPH_DEVICE (auto, cpu, cuda, cuda:N) and KGRAPH_NUM_THREADS "
               "(ONNX Runtime intra-op threads, 0 = all cores), or 'kgraph_device' in keras.json.")
    parser.add_argument("--version", action="version", version=f"kgraph {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="train an MLP on built-in synthetic data, export it, run the exported file",
        description="Train an MLP (K.gradients + Adam through K.function) on seeded synthetic "
                    "data, printing the loss as it falls; export it for inference (mlp.onnx) and "
                    "as a training step (mlp_train_step.onnx); load both in fresh onnxruntime "
                    "sessions and report accuracy and agreement with kgraph.")
    demo.add_argument("--out", default="kgraph-demo", metavar="DIR",
                      help="directory for the exported .onnx files (default: %(default)s)")
    demo.add_argument("--epochs", type=_positive_int, default=20, metavar="N",
                      help="training epochs (default: %(default)s)")
    demo.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                      help="minibatch size (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data, weights and shuffling (default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from . import demo
        result = demo.run(out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        if not result["losses"][-1] < result["losses"][0] or result["max_difference"] > 1e-5:
            print("kgraph demo: the loss did not fall or the exported model disagrees", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
