"""``kgraph convert``: a Keras 2 HDF5 model file as an ONNX file, with no TensorFlow."""
from .common import UsageError, add_force_argument


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "convert", help="convert a Keras 2 .h5 model file (model.save output) into ONNX",
        description="Load a Keras 2 HDF5 model file (model.save output of Keras 2.0-2.3, "
                    "TensorFlow-trained files included) with Keras 2.3.1 running on kgraph - no "
                    "TensorFlow needed; kgraph picks its own backend whatever KERAS_BACKEND or "
                    "keras.json say - and write it as ONNX: the inference graph with the weights "
                    "frozen in (default) or the compiled training step (--training).  Needs "
                    "Keras: pip install \"kgraph-onnx[keras]\".")
    parser.add_argument("model", metavar="MODEL.h5", help="the Keras HDF5 model file")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset (default: kgraph's default, 18)")
    parser.add_argument("--training", action="store_true",
                        help="export the training step (optimizer, loss, metrics) instead of inference")
    parser.add_argument("--custom", action="extend", nargs="+", default=[], metavar="module:Name",
                        help="a custom layer, loss, metric... the file names, importable from "
                             "module (on PYTHONPATH); repeatable")
    add_force_argument(parser)
    return parser


def run(args):
    from ..deploy.files import OutputExists
    from ..keras.convert import KerasNotInstalled, convert

    try:
        path = convert(args.model, args.output, opset=args.opset, training=args.training,
                       custom_objects=args.custom, force=args.force)
    except KerasNotInstalled as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError, OutputExists, OSError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {path} ({'training step' if args.training else 'inference'}) from {args.model}")
    return 0
