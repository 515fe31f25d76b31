"""Process-wide settings: keras.json (``$KERAS_HOME`` or ``~/.keras``) plus kgraph's own keys.

Keras 2.3.1 reads ``floatx``, ``epsilon``, ``image_data_format`` and ``backend`` from the same
file; kgraph adds ``kgraph_device`` (overridden by ``$KGRAPH_DEVICE``).  A bad value is an error
naming the file, the key and what is allowed — a silently ignored typo would make every model
run in the wrong precision or on the wrong device.
"""
import json
import os
import re

FLOATX = ("float16", "float32", "float64")
DATA_FORMATS = ("channels_last", "channels_first")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def keras_home():
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    return os.path.join(os.path.expanduser("~"), ".keras")


def check_floatx(value, where="set_floatx"):
    if value not in FLOATX:
        raise ValueError(f"{where}: unknown floatx {value!r}; expected one of {', '.join(FLOATX)}")
    return value


def check_epsilon(value, where="set_epsilon"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}: epsilon must be a positive number, got {value!r}")
    return float(value)


def check_data_format(value, where="set_image_data_format"):
    if value not in DATA_FORMATS:
        raise ValueError(f"{where}: unknown data_format {value!r}; expected one of {', '.join(DATA_FORMATS)}")
    return value


def check_device(value, where="KGRAPH_DEVICE"):
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        raise ValueError(f"{where}: unknown device {value!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return value


class Settings:
    def __init__(self):
        self.floatx = "float32"
        self.epsilon = 1e-7
        self.image_data_format = "channels_last"
        self.device = "auto"

    def load(self):
        path = os.path.join(keras_home(), "keras.json")
        if os.path.exists(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a readable JSON file ({e})") from None
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
            checks = {"floatx": check_floatx, "epsilon": check_epsilon,
                      "image_data_format": check_data_format, "kgraph_device": check_device}
            for key, check in checks.items():
                if key in data:
                    value = check(data[key], where=f"{path}: key {key!r}")
                    setattr(self, "device" if key == "kgraph_device" else key, value)
        if os.environ.get("KGRAPH_DEVICE"):
            self.device = check_device(os.environ["KGRAPH_DEVICE"])
        return self


settings = Settings().load()
