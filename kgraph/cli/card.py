"""``kgraph card``: a Markdown model card."""
import os

from .common import add_force_argument, add_model_argument, check_output, load_model, write_output


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "card", help="write a Markdown model card for an ONNX file",
        description="Write a Markdown model card: signature, opsets, op histogram, parameters, "
                    "and how to run, check, deploy and serve the file.")
    add_model_argument(parser)
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.md", help="the card to write")
    parser.add_argument("--name", help="the card's title (default: the graph's name)")
    parser.add_argument("--description", default="", help="a paragraph under the title")
    add_force_argument(parser)
    return parser


def run(args):
    from ..deploy.model_card import model_card

    check_output(args.output, args.force)
    model = load_model(args.model)
    text = model_card(model, filename=os.path.basename(args.model), name=args.name, description=args.description)
    write_output(args.output, text, args.force)
    print(f"wrote {args.output}")
    return 0
