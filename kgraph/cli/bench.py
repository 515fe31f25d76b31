"""``kgraph bench``: latency and throughput of an ONNX file on one engine."""
import json
import sys
import time

from .check import check_thread_setting
from .common import UsageError, add_model_argument, load_model, non_negative_int, positive_int

BENCH_ENGINES = ("ort", "openvino", "reference")
PROGRESS_AFTER_S = 1.0  # short runs print no progress bar: it would only flicker


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench", help="measure an ONNX file's latency (p50/p90/p99) and throughput",
        description="Run the model on seeded random inputs matching its signature (a symbolic "
                    "first dim is --batch, other symbolic dims 2 unless --dim says) and report "
                    "latency percentiles of one run (feeds in, outputs back as numpy arrays) and "
                    "throughput in samples per second, warmup runs excluded.  ONNX Runtime's "
                    "intra-op threads follow KGRAPH_NUM_THREADS.")
    add_model_argument(parser)
    parser.add_argument("--batch", type=positive_int, default=1, help="size of a symbolic first dim (default 1)")
    parser.add_argument("--iters", type=positive_int, default=100, help="timed runs (default 100)")
    parser.add_argument("--warmup", type=non_negative_int, default=10, help="untimed runs first (default 10)")
    parser.add_argument("--engine", default="ort", choices=BENCH_ENGINES, help="the engine (default ort)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where ONNX Runtime runs it (default cpu); cuda needs onnxruntime-gpu")
    parser.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of the symbolic dim NAME (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def percentiles(latencies_s):
    """``{"p50", "p90", "p99", "mean", "min", "max"}`` in milliseconds."""
    import numpy as np

    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()),
            "min": float(ms.min()), "max": float(ms.max())}


def run(args):
    from tqdm import tqdm

    from ..deploy.engines import EngineError, get_engine, parse_dims, random_feeds

    check_thread_setting()
    try:
        engine = get_engine(args.engine)
        engine.check_device(args.device)
    except EngineError as error:
        raise UsageError(str(error)) from None
    model = load_model(args.model)
    try:
        feeds = random_feeds(model, batch=args.batch, dims=parse_dims(args.dim), seed=args.seed)
    except ValueError as error:
        raise UsageError(f"{args.model}: {error}") from None
    try:
        run_once = engine.compile(model, device=args.device)
    except EngineError as error:  # --device cuda without a CUDA provider: say what to install
        raise UsageError(str(error)) from None
    except Exception as error:  # noqa: BLE001 -- the engine's own load error, as one line
        print(f"kgraph bench: {args.engine} cannot load {args.model}: {type(error).__name__}: "
              f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}", file=sys.stderr)
        return 1

    try:
        for _ in range(args.warmup):
            run_once(feeds)
        latencies = []
        # the bar appears only once the run has taken a second (tqdm's delay), on stderr so that
        # --json output on stdout stays parseable
        with tqdm(total=args.iters, desc=f"bench {args.engine}", unit="run", delay=PROGRESS_AFTER_S,
                  file=sys.stderr, leave=False) as bar:
            clock = time.perf_counter
            for _ in range(args.iters):
                start = clock()
                run_once(feeds)
                latencies.append(clock() - start)
                bar.update(1)
    except Exception as error:  # noqa: BLE001 -- the engine's run-time error, as one line
        print(f"kgraph bench: {args.engine} failed running {args.model}: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1

    batch = _batch_size(feeds, model)
    total = sum(latencies)
    report = {"model": args.model, "engine": args.engine, "device": args.device, "batch": batch,
              "iters": args.iters, "warmup": args.warmup,
              "inputs": {n: {"dtype": v.dtype.name, "shape": list(v.shape)} for n, v in feeds.items()},
              "latency_ms": percentiles(latencies),
              "throughput_samples_per_s": batch * args.iters / total if total > 0 else float("inf")}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lat = report["latency_ms"]
    print(f"{args.model} on {args.engine} ({args.device}), batch {batch}, {args.iters} runs after "
          f"{args.warmup} warmup\n"
          f"latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
          f"(mean {lat['mean']:.3f}, min {lat['min']:.3f}, max {lat['max']:.3f})\n"
          f"throughput: {report['throughput_samples_per_s']:,.1f} samples/s")
    return 0


def _batch_size(feeds, model):
    """Samples per run: the first dim of the first input (the batch, whether symbolic or fixed);
    1 for a scalar input or none."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1
