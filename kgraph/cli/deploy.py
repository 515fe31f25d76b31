"""``kgraph deploy triton``: a Triton Inference Server model repository."""
from .common import UsageError, add_force_argument, add_model_argument, load_model, non_negative_int, positive_int


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "deploy", help="write a deployment of an ONNX file (a Triton model repository)",
        description="Write what a production server loads.  Targets: triton.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    triton = targets.add_parser(
        "triton", help="a Triton model repository (config.pbtxt + N/model.onnx)",
        description="Write REPO/NAME/config.pbtxt (platform onnxruntime_onnx, dims from the model, "
                    "the batch dim dropped when --max-batch-size > 0, which needs a symbolic first "
                    "dim on every input and output) and REPO/NAME/VERSION/model.onnx.  Nothing is "
                    "written when the model does not fit the options.")
    add_model_argument(triton)
    triton.add_argument("--repo", required=True, metavar="DIR", help="the model repository folder")
    triton.add_argument("--name", help="the model's name in the repository (default: the file's stem)")
    triton.add_argument("--version", type=positive_int, default=1, metavar="N", help="model version (default: 1)")
    triton.add_argument("--max-batch-size", type=non_negative_int, default=0, metavar="N",
                        help="Triton's max_batch_size; 0 (default) leaves batching to the caller")
    triton.add_argument("--instances", type=positive_int, default=1, metavar="N",
                        help="model instances (instance_group count, default: 1)")
    triton.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind (default: cpu)")
    triton.add_argument("--dynamic-batching", action="store_true",
                        help="let Triton batch requests together (needs --max-batch-size > 0)")
    add_force_argument(triton)
    return parser


def run(args):
    from ..deploy.triton import TritonConfigError, write_repository

    model = load_model(args.model)
    try:
        written = write_repository(model, args.model, args.repo, name=args.name, version=args.version,
                                   force=args.force, max_batch_size=args.max_batch_size,
                                   instances=args.instances, kind=args.kind,
                                   dynamic_batching=args.dynamic_batching)
    except TritonConfigError as error:
        raise UsageError(f"{args.model}: {error}") from None
    except OSError as error:
        raise UsageError(str(error)) from None
    print("wrote " + ", ".join(written))
    return 0
