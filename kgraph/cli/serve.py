"""``kgraph serve``: an ONNX file on a real Triton Inference Server (KServe v2, HTTP and gRPC) on
127.0.0.1, through NVIDIA PyTriton, the model run by ONNX Runtime."""
from .common import UsageError, add_model_argument, load_model, non_negative_int, port


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve", help="serve an ONNX file on a Triton Inference Server (HTTP and gRPC, 127.0.0.1)",
        description="Serve the model on a Triton Inference Server started through NVIDIA PyTriton "
                    "(pip install 'kgraph-onnx[serve]'; it bundles Triton's server and needs "
                    "numpy < 2), listening on 127.0.0.1 only, with ONNX Runtime running the model.  "
                    "Prints the URLs once the model is ready; SIGINT (Ctrl-C) or SIGTERM stops the "
                    "server and every process it started.")
    add_model_argument(parser)
    parser.add_argument("--name", help="the model's name on the server (default: the file's stem)")
    parser.add_argument("--http-port", type=port, default=8000, metavar="P",
                        help="KServe v2 HTTP port (default: 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=port, default=8001, metavar="P",
                        help="KServe v2 gRPC port (default: 8001; 0 picks a free one)")
    parser.add_argument("--max-batch-size", type=non_negative_int, default=0, metavar="N",
                        help="Triton's max_batch_size; > 0 needs a symbolic first dim on every input "
                             "and output, which Triton then batches over; 0 (default): the caller "
                             "sends whole tensors")
    return parser


def run(args):
    import importlib.util

    model = load_model(args.model)
    from ..deploy.serve import ModelServer, ServeError, check_numpy, serve_until_signal

    try:
        server = ModelServer(args.model, model=model, name=args.name, http_port=args.http_port,
                             grpc_port=args.grpc_port, max_batch_size=args.max_batch_size)
    except ServeError as error:
        raise UsageError(f"{args.model}: {error}") from None
    if importlib.util.find_spec("pytriton") is None:
        raise UsageError("kgraph serve needs NVIDIA PyTriton, which bundles the Triton server: "
                         "pip install 'kgraph-onnx[serve]'")
    try:
        check_numpy()
        return serve_until_signal(server)
    except ServeError as error:  # numpy 2, or a port that is taken
        raise UsageError(str(error)) from None
