"""Keras 2.3.1 on kgraph gives Keras's numbers: each test here failed before the kgraph fix it
names, and compares with numpy computed from the formula Keras documents (or the layer's own
weights), not with kgraph itself."""
import numpy as np
import pytest

import keras
import keras.backend as KB
from keras import activations, layers, models

import kgraph.backend as K

SELU_ALPHA = 1.6732632423543772848170429916717  # keras/activations.py:86-87
SELU_SCALE = 1.0507009873554804934193349852946


def test_selu_is_keras_formula_to_float32_rounding():
    # fix: kgraph/ops/nn.py elu lowering (ONNX Runtime's Elu was up to 2 ulps off after scaling)
    x = np.concatenate([np.linspace(-20, 5, 20001), -np.logspace(-40, 1.5, 2001),
                        np.logspace(-40, 38, 201), [0.0, -0.0, -1e4, -3e38]]).astype(np.float32)
    # TF's K.elu: where(x > 0, elu(x), alpha * elu(x)), each step rounded to float32
    elu = np.where(x > 0, x, np.expm1(x.astype(np.float64)).astype(np.float32))
    expected = np.float32(SELU_SCALE) * np.where(x > 0, elu, np.float32(SELU_ALPHA) * elu)
    got = K.eval(activations.selu(K.constant(x)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    model = models.Sequential([layers.Activation("selu", input_shape=(x.size,))])
    np.testing.assert_array_equal(model.predict(x[None])[0], expected)
