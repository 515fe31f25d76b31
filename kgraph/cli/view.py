"""``kgraph view``: the model in Netron, served on the loopback interface."""
import os
import signal
import sys
import threading

from .common import UsageError, add_model_argument, load_model, port

HOST = "127.0.0.1"  # never every interface: the model's weights are in the file it serves


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "view", help="open an ONNX file in Netron (extra 'view'), served on 127.0.0.1",
        description="Serve the model with Netron on 127.0.0.1 and open it in the web browser; "
                    "print the URL; stop on Ctrl-C (SIGINT) or SIGTERM.  Needs the 'netron' "
                    "package: pip install 'kgraph-onnx[view]'.")
    add_model_argument(parser)
    parser.add_argument("--port", type=port, default=None,
                        help="the port (default: Netron's choice, 8080 when free; 0: any free port)")
    parser.add_argument("--no-browser", action="store_true", help="print the URL only; open no browser")
    return parser


def run(args):
    try:
        import netron
    except ImportError as error:
        raise UsageError(f"kgraph view needs the 'netron' package, which is not installed ({error}); "
                         f"install it with: pip install 'kgraph-onnx[view]'") from None
    load_model(args.model)  # a missing or non-ONNX file is a clear error, not a blank Netron page

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            address = netron.serve(os.path.abspath(args.model), address=(HOST, args.port), browse=False)
        except OSError as error:
            raise UsageError(f"cannot serve on {HOST}:{args.port}: {error.strerror or error}") from None
        url = f"http://{address[0]}:{address[1]}"
        print(f"serving {args.model} in Netron at {url}/ (model file: {url}/data/"
              f"{os.path.basename(args.model)}); Ctrl-C stops", flush=True)
        if not args.no_browser:
            import webbrowser
            webbrowser.open(url)
        # wait() with a timeout: a bare wait() would not return to run the signal handler promptly
        while not stop.wait(0.2):
            if not netron.status(address):
                print("kgraph view: the Netron server stopped by itself", file=sys.stderr)
                return 1
        netron.stop(address)
        print("stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
