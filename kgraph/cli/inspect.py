"""``kgraph inspect``: what an ONNX file holds."""
import json

from .common import add_model_argument, load_model


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "inspect", help="print an ONNX file's signature, opsets, ops, functions and parameters",
        description="Print the inputs and outputs (names, shapes with symbolic dims, dtypes), "
                    "opset imports, op-type histogram (nested Loop/If bodies included), "
                    "custom-domain functions, parameter count and bytes, and the producer.")
    add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print it as JSON")
    return parser


def run(args):
    from ..deploy.signature import shape_text, summarize

    summary = summarize(load_model(args.model))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    producer = summary["producer"]
    lines = [f"{args.model}: {summary['kind']} model {summary['graph']!r}, produced by "
             f"{producer['name'] or '?'} {producer['version'] or '(no version)'}, IR version {summary['ir_version']}",
             "opsets: " + ", ".join(f"{d} {v}" for d, v in summary["opset_imports"].items())]
    for title, values in (("inputs", summary["inputs"]), ("outputs", summary["outputs"])):
        lines.append(f"{title}:")
        width = max((len(v["name"]) for v in values), default=0)
        lines += [f"  {v['name']:<{width}}  {v['dtype']:<8} {shape_text(v['shape'])}" for v in values]
    lines.append(f"parameters: {summary['parameters']:,} in {summary['initializers']} initializers "
                 f"({summary['parameter_bytes']:,} bytes)")
    lines.append(f"ops ({sum(summary['ops'].values())} nodes):")
    lines += [f"  {count:6d}  {op}" for op, count in summary["ops"].items()]
    if summary["functions"]:
        lines.append("local functions:")
        lines += [f"  {f['domain']}::{f['name']}  ({f['nodes']} nodes: {', '.join(f['ops'])})" for f in summary["functions"]]
    print("\n".join(lines))
    return 0
