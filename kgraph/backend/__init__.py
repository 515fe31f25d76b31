"""The Keras 2.3.1 backend API on kgraph: ``import kgraph.backend as K``.

Each module holds one group of the API contract; every function records IR nodes through the
primitives of ``kgraph.ops`` and never builds ONNX itself.
"""
import importlib

from ..graph import Tensor

# group module → the K functions it provides, in the contract's order
API = {
    "config": """backend epsilon set_epsilon floatx set_floatx cast_to_floatx image_data_format
        set_image_data_format image_dim_ordering set_image_dim_ordering normalize_data_format
        learning_phase set_learning_phase clear_session get_session set_session get_uid reset_uids
        manual_variable_initialization name_scope symbolic eager control_dependencies""",
    "variables": """placeholder is_placeholder variable is_variable constant is_tensor is_keras_tensor
        is_sparse to_dense shape int_shape ndim size dtype eval zeros ones eye zeros_like ones_like
        identity random_uniform_variable random_normal_variable count_params cast get_variable_shape""",
    "state": """update update_add update_sub moving_average_update get_value batch_get_value set_value
        batch_set_value print_tensor""",
    "linalg": """dot batch_dot transpose gather max min sum prod cumsum cumprod var std mean any all
        argmax argmin logsumexp""",
    "elementwise": """square abs sqrt exp log round sign pow clip equal not_equal greater greater_equal
        less less_equal maximum minimum sin cos""",
    "shaping": """concatenate reshape permute_dimensions resize_images resize_volumes repeat_elements
        repeat arange tile flatten batch_flatten expand_dims squeeze temporal_padding
        spatial_2d_padding spatial_3d_padding stack one_hot reverse slice pattern_broadcast""",
    "control": """function gradients stop_gradient switch in_train_phase in_test_phase""",
    "recurrent": """rnn map_fn foldl foldr""",
    "nn": """relu elu softmax softplus softsign sigmoid hard_sigmoid tanh categorical_crossentropy
        sparse_categorical_crossentropy binary_crossentropy dropout l2_normalize in_top_k
        normalize_batch_in_training batch_normalization bias_add""",
    "conv": """conv1d conv2d conv2d_transpose separable_conv1d separable_conv2d depthwise_conv2d conv3d
        conv3d_transpose local_conv1d local_conv2d pool2d pool3d""",
    "random": """random_normal random_uniform random_binomial truncated_normal""",
    "ctc": """ctc_label_dense_to_sparse ctc_batch_cost ctc_decode""",
}
API = {group: names.split() for group, names in API.items()}
ALL_NAMES = [name for names in API.values() for name in names]

missing = []
for _group, _names in API.items():
    try:
        _module = importlib.import_module(f".{_group}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{_group}":
            raise
        missing.extend(_names)
        continue
    for _name in _names:
        if hasattr(_module, _name):
            globals()[_name] = getattr(_module, _name)
        else:
            missing.append(_name)
from . import operators  # noqa: E402

Tensor.backend = importlib.import_module(__name__)
__all__ = [n for n in ALL_NAMES if n not in missing]

# Keras 2.3.1 imports this module as its backend (KERAS_BACKEND=kgraph.backend) from its own
# load_backend.py; what Keras then needs patched on today's Python and h5py is applied by the Keras
# integration layer above this one, imported by name so that plain kgraph never depends on it.
importlib.import_module("kgraph.keras.compat").install(Tensor.backend)
