"""The ``kgraph`` command (also ``python -m kgraph``): one module per subcommand.

Each module in ``SUBCOMMANDS`` exposes ``add_parser(subparsers)``, which registers its parser
and its arguments, and ``run(args)``, which does the work and returns the exit status: 0 done,
1 a check that failed, 2 bad usage or bad input (``UsageError``, printed as one clear line).
Heavy imports (onnxruntime, openvino, tritonclient) happen inside ``run``, so ``--help`` is quick.
"""
import argparse
import importlib
import sys

from .common import UsageError

SUBCOMMANDS = ("demo", "inspect", "codegen", "card", "deploy", "convert", "check", "bench", "view", "serve")


def build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="kgraph",
        description="kgraph: the Keras 2 backend API as a transpiler to ONNX, trained and run on "
                    "ONNX Runtime.  Use it from Python (import kgraph.backend as K; "
                    "KERAS_BACKEND=kgraph.backend for Keras 2.3.1); these commands train a demo "
                    "and inspect, check, benchmark, generate code for, deploy and serve ONNX files.",
        epilog="Exit status: 0 ok, 1 a check failed, 2 bad usage or bad input.  Settings: "
               "KGRAPH_DEVICE (auto, cpu, cuda, cuda:N) and KGRAPH_NUM_THREADS (ONNX Runtime "
               "intra-op threads, 0 = all cores), or 'kgraph_device' in keras.json.")
    parser.add_argument("--version", action="version", version=f"kgraph {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except UsageError as error:
        print(f"kgraph {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
