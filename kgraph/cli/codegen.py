"""``kgraph codegen``: a standalone predict.py for an ONNX file."""
from .common import UsageError, add_force_argument, add_model_argument, check_output, load_model, write_output


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "codegen", help="generate a standalone predict.py (onnxruntime + numpy) for an ONNX file",
        description="Generate a runner script that needs only onnxruntime and numpy, with the "
                    "model's signature baked in: `python predict.py in.npz -o out.npz` (or .npy for "
                    "a single input) validates names, dtypes and shapes, and uses CUDA when "
                    "available.  The script finds the model by its path relative to the script.")
    add_model_argument(parser)
    parser.add_argument("-o", "--output", required=True, metavar="predict.py", help="the script to write")
    add_force_argument(parser)
    return parser


def run(args):
    from ..deploy.codegen import predict_script

    check_output(args.output, args.force)
    model = load_model(args.model)
    try:
        text = predict_script(model, args.model, args.output)
    except ValueError as error:
        raise UsageError(f"{args.model}: {error}") from None
    write_output(args.output, text, args.force)
    print(f"wrote {args.output} (run: python {args.output} inputs.npz -o outputs.npz)")
    return 0
