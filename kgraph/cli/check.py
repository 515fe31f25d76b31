"""``kgraph check``: does an ONNX file give the same answers on every engine?"""
import json

from .common import UsageError, add_model_argument, load_model, non_negative_float, positive_int

DEFAULT_ENGINES = ("ort", "reference", "openvino")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "check", help="run an ONNX file on several engines and compare them with ONNX Runtime",
        description="Run onnx.checker (full check), then run the model with seeded random inputs "
                    "matching its signature on each engine and print, per output, the largest "
                    "difference from ONNX Runtime.  Symbolic dims: the first is --batch, others "
                    "2 unless --dim says; integer inputs are small positive values (valid ids "
                    "and lengths along the inputs' axes).  Engines: ort (ONNX Runtime), reference "
                    "(onnx.reference, the specification in numpy), openvino (extra 'openvino'; "
                    "run at float32 on the model with its local functions inlined).  Exit 1 if "
                    "the checker fails, an engine fails, or a difference passes "
                    "atol + rtol * |ort|.")
    add_model_argument(parser)
    parser.add_argument("--engines", default=None, metavar="LIST",
                        help="comma-separated engines to compare with ort (default: ort,reference "
                             "and openvino when installed)")
    parser.add_argument("--rtol", type=non_negative_float, default=1e-4, help="relative tolerance (default 1e-4)")
    parser.add_argument("--atol", type=non_negative_float, default=1e-5, help="absolute tolerance (default 1e-5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--batch", type=positive_int, default=2, help="size of a symbolic first dim (default 2)")
    parser.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of the symbolic dim NAME (repeatable)")
    parser.add_argument("--inputs", metavar="FEEDS.npz", help="check on these inputs instead of random ones")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def check_thread_setting():
    """A bad KGRAPH_NUM_THREADS is bad input (exit 2), not an engine failing the check."""
    from ..runtime.session import intra_op_threads

    try:
        intra_op_threads()
    except ValueError as error:
        raise UsageError(str(error)) from None


def engine_names(text):
    """The engines to run, ``ort`` (the baseline) first; ``None`` for the default set."""
    from ..deploy.engines import ENGINES, EngineError

    if text is None:
        names = [n for n in DEFAULT_ENGINES if n != "openvino" or _installed(ENGINES[n])]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise UsageError(f"--engines: expected a comma-separated list of {', '.join(ENGINES)}, got {text!r}")
    names = ["ort"] + [n for n in dict.fromkeys(names) if n != "ort"]
    for name in names:
        if name not in ENGINES:
            raise UsageError(f"--engines: unknown engine {name!r}; expected some of {', '.join(ENGINES)}")
        try:
            ENGINES[name].require()
        except EngineError as error:
            raise UsageError(str(error)) from None
    return names


def _installed(engine):
    try:
        engine.require()
        return True
    except ValueError:
        return False


def load_feeds(path, model):
    """The arrays of ``path`` (.npz), checked against the model's inputs."""
    import numpy as np

    from ..deploy.signature import shape_text, signature

    try:
        with np.load(path, allow_pickle=False) as data:
            feeds = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise UsageError(f"--inputs {path}: cannot read it as .npz ({error})") from None
    inputs, _ = signature(model)
    expected = [i["name"] for i in inputs]
    if sorted(feeds) != sorted(expected):
        raise UsageError(f"--inputs {path}: holds {', '.join(sorted(feeds)) or 'nothing'}; the model's "
                         f"inputs are {', '.join(expected)}")
    for info in inputs:
        value = feeds[info["name"]]
        shape = info["shape"]
        fits = shape is None or (len(shape) == value.ndim and all(
            not isinstance(d, int) or d == n for d, n in zip(shape, value.shape)))
        if value.dtype != np.dtype(info["dtype"]) or not fits:
            raise UsageError(f"--inputs {path}: {info['name']!r} is {value.dtype} {value.shape}; the "
                             f"model expects {info['dtype']} {shape_text(shape)}")
    return feeds


def _first_line(error):
    """The error as one short line: engines' messages run to many lines of C++ context."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " / ".join(lines[:3]) + (" ..." if len(lines) > 3 else "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _run_engine(engine, model, feeds):
    """``(outputs, None)`` or ``(None, error text)``: an engine that cannot run the model is a
    failed check, reported, not a traceback."""
    import warnings

    import numpy as np

    try:
        # inf and NaN are legitimate outputs (CTC's loss of an unreachable label): compared, not warned about
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return engine(model, feeds), None
    except Exception as error:  # noqa: BLE001 -- any engine failure is the check's finding
        return None, _first_line(error)


def run(args):
    import numpy as np
    import onnx

    from ..deploy.engines import ENGINES, compare, parse_dims, random_feeds, within

    check_thread_setting()
    names = engine_names(args.engines)
    model = load_model(args.model)
    if args.inputs:
        feeds = load_feeds(args.inputs, model)
    else:
        try:
            feeds = random_feeds(model, batch=args.batch, dims=parse_dims(args.dim), seed=args.seed)
        except ValueError as error:
            raise UsageError(f"{args.model}: {error}") from None

    report = {"model": args.model, "rtol": args.rtol, "atol": args.atol,
              "inputs": {n: {"dtype": v.dtype.name, "shape": list(v.shape)} for n, v in feeds.items()},
              "seed": None if args.inputs else args.seed, "checker": "ok", "engines": {}}
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:  # noqa: BLE001 -- the checker's ValidationError and its shape-inference errors
        report["checker"] = _first_line(error)

    baseline, error = _run_engine(ENGINES["ort"], model, feeds)
    report["engines"]["ort"] = {"error": error, "outputs": {}}
    output_names = [o.name for o in model.graph.output]
    for name in names[1:]:
        entry = report["engines"][name] = {"error": None, "outputs": {}}
        if baseline is None:
            entry["error"] = "not compared: ONNX Runtime failed"
            continue
        outputs, entry["error"] = _run_engine(ENGINES[name], model, feeds)
        if outputs is None:
            continue
        for output, expected, actual in zip(output_names, baseline, outputs):
            expected, actual = np.asarray(expected), np.asarray(actual)
            result = entry["outputs"][output] = {"shape": list(actual.shape), "dtype": actual.dtype.name}
            if actual.shape != expected.shape or actual.dtype != expected.dtype:
                result.update(ok=False, mismatch=f"{actual.dtype} {actual.shape} where ort gives "
                                                 f"{expected.dtype} {expected.shape}")
                continue
            diff, scale = compare(expected, actual)
            worst = float(diff.max(initial=0.0))
            relative = float((diff / np.where(scale > 0, scale, np.inf)).max(initial=0.0))
            result.update(max_abs_diff=worst, max_rel_diff=relative, ok=within(diff, scale, args.rtol, args.atol),
                          nonfinite=int(np.count_nonzero(~np.isfinite(expected))), size=int(expected.size))
    report["ok"] = report["checker"] == "ok" and all(
        e["error"] is None and all(o["ok"] for o in e["outputs"].values()) for e in report["engines"].values())
    print(json.dumps(report, indent=2) if args.json else _text(report, names))
    return 0 if report["ok"] else 1


def _text(report, names):
    given = "given" if report["seed"] is None else f"random, seed {report['seed']}"
    lines = [f"{report['model']}: onnx.checker (full check): {report['checker']}",
             f"inputs ({given}): " + ", ".join(f"{n} {i['dtype']} {tuple(i['shape'])}"
                                                for n, i in report["inputs"].items())]
    ort = report["engines"]["ort"]
    lines.append(f"  ort        {'failed: ' + ort['error'] if ort['error'] else 'ran (the baseline)'}")
    for name in names[1:]:
        entry = report["engines"][name]
        if entry["error"]:
            lines.append(f"  {name:<10} failed: {entry['error']}")
        for output, o in entry["outputs"].items():
            if "mismatch" in o:
                lines.append(f"  {name:<10} {output}: FAIL, {o['mismatch']}")
                continue
            note = f"  ({o['nonfinite']} of {o['size']} values not finite on ort)" if o["nonfinite"] else ""
            lines.append(f"  {name:<10} {output}: max |diff| {o['max_abs_diff']:.3g}, max rel "
                         f"{o['max_rel_diff']:.3g}  {'ok' if o['ok'] else 'FAIL'}{note}")
    verdict = "ok" if report["ok"] else "FAILED"
    if len(names) == 1:
        lines.append(f"{verdict}: only ort ran, nothing compared")
    else:
        lines.append(f"{verdict}: {', '.join(names[1:])} against ort, rtol {report['rtol']:g}, "
                     f"atol {report['atol']:g}")
    return "\n".join(lines)
