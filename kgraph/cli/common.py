"""What the subcommands share: argument types, loading an ONNX file, writing an output file."""
import argparse
import os

from ..deploy.files import OutputExists, check_writable, write_atomic


class UsageError(Exception):
    """Bad usage or bad input: ``main`` prints the message and exits with status 2."""


def _at_least(convert, minimum, expected):
    """An argparse type: ``text`` read by ``convert``, refused below ``minimum``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


positive_int = _at_least(int, 1, "a positive integer")
non_negative_int = _at_least(int, 0, "an integer >= 0")
non_negative_float = _at_least(float, 0.0, "a number >= 0")


def port(text):
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return value


def add_model_argument(parser):
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX file")


def add_force_argument(parser):
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def load_model(path):
    """The ``onnx.ModelProto`` at ``path`` (weights included), or a ``UsageError`` saying why not."""
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file (expected an ONNX model file)")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory (expected an ONNX model file)")
    try:
        model = onnx.load(path)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node and not model.graph.output:
        raise UsageError(f"{path} is not an ONNX model (it parses as an empty ModelProto)")
    return model


def check_output(path, force):
    """Fail now, before any work, if ``path`` cannot be written."""
    try:
        check_writable(path, force=force)
    except OutputExists as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(str(error)) from None


def write_output(path, text, force):
    """Write the file atomically with mode 0644; never over an existing file without ``force``."""
    try:
        return write_atomic(path, text, force=force)
    except OutputExists as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error}") from None
