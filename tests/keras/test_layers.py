"""Every layer family of Keras 2.3.1's keras/layers on kgraph: it builds, its forward pass equals a
numpy computation written here from the layer's own weights (get_weights), and one
train_on_batch step gives a finite loss and moves the layer's trainable weights.

The numpy references are deliberately plain (explicit windows for convolutions and pooling, one
step at a time for recurrent cells) and run in float64; weights are randomized first so that
zero biases or identity initializers hide nothing."""
import itertools

import numpy as np
import pytest

import keras.backend as KB
from keras import layers as L
from keras import models

import kgraph.backend as K

RTOL, ATOL = 2e-5, 2e-5


# -- numpy references -----------------------------------------------------------------------------
def _tup(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _pad_same(x, ks, strides, dilation=None, value=0.0):
    """TF's 'same' padding of the spatial axes of a channels_last x (the extra cell after)."""
    nd = len(ks)
    dilation = dilation or (1,) * nd
    pads = [(0, 0)]
    for i in range(nd):
        n, eff = x.shape[1 + i], (ks[i] - 1) * dilation[i] + 1
        total = max((-(-n // strides[i]) - 1) * strides[i] + eff - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _windows(x, ks, strides, dilation):
    """(output index, window) over the spatial axes of a channels_last x."""
    nd = len(ks)
    out = [(x.shape[1 + i] - (ks[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in range(nd)]
    for idx in np.ndindex(*out):
        win = x[(slice(None),) + tuple(slice(i * s, i * s + (k - 1) * d + 1, d)
                                       for i, s, k, d in zip(idx, strides, ks, dilation))]
        yield out, idx, win


def np_conv(x, k, strides=1, padding="valid", dilation=1):
    """Cross-correlation, channels_last; k is (*kernel, in, out) as Keras stores it."""
    nd = k.ndim - 2
    ks, strides, dilation = k.shape[:nd], _tup(strides, nd), _tup(dilation, nd)
    if padding == "same":
        x = _pad_same(x, ks, strides, dilation)
    elif padding == "causal":
        x = np.pad(x, [(0, 0), ((ks[0] - 1) * dilation[0], 0), (0, 0)])
    result = None
    for out, idx, win in _windows(x, ks, strides, dilation):
        if result is None:
            result = np.zeros((x.shape[0], *out, k.shape[-1]))
        result[(slice(None),) + idx] = np.tensordot(win, k, axes=(list(range(1, nd + 2)), list(range(nd + 1))))
    return result


def np_depthwise(x, dk, strides=1, padding="valid", dilation=1):
    """Each input channel c with its own dk[..., c, m] filters: output channel c * mult + m."""
    cin, mult = dk.shape[-2:]
    return np.concatenate([np_conv(x[..., c:c + 1], dk[..., c:c + 1, m:m + 1], strides, padding, dilation)
                           for c in range(cin) for m in range(mult)], axis=-1)


def np_conv_transpose(x, k, strides, padding):
    """The gradient of np_conv: each input cell scatters k (*kernel, out, in) times itself."""
    nd = x.ndim - 2
    ks, strides = k.shape[:nd], _tup(strides, nd)
    full = [(x.shape[1 + i] - 1) * strides[i] + ks[i] for i in range(nd)]
    out = np.zeros((x.shape[0], *full, k.shape[-2]))
    for idx in np.ndindex(*x.shape[1:1 + nd]):
        window = (slice(None),) + tuple(slice(i * s, i * s + kk) for i, s, kk in zip(idx, strides, ks))
        out[window] += np.tensordot(x[(slice(None),) + idx], k, axes=([1], [nd + 1]))
    if padding == "same":  # the forward conv's 'same' padding, cropped back off
        crop = [(f - x.shape[1 + i] * strides[i]) // 2 for i, f in enumerate(full)]
        out = out[(slice(None),) + tuple(slice(c, c + x.shape[1 + i] * strides[i]) for i, c in enumerate(crop))]
    return out


def np_pool(x, pool, strides, padding, mode):
    nd = x.ndim - 2
    pool, strides = _tup(pool, nd), _tup(strides or pool, nd)
    if padding == "same":  # padding never wins a max and is left out of an average
        x = _pad_same(x, pool, strides, value=np.nan)
    reduce = np.nanmax if mode == "max" else np.nanmean
    result = None
    for out, idx, win in _windows(x, pool, strides, (1,) * nd):
        if result is None:
            result = np.zeros((x.shape[0], *out, x.shape[-1]))
        result[(slice(None),) + idx] = reduce(win, axis=tuple(range(1, nd + 1)))
    return result


def np_bilinear(x, fy, fx):
    """TF1's resize_bilinear (align_corners=False): source = destination / factor, edge held."""
    def axis_weights(n, f):
        src = np.arange(n * f) / f
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo
    (y0, y1, wy), (x0, x1, wx) = axis_weights(x.shape[1], fy), axis_weights(x.shape[2], fx)
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bottom = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def np_local1d(x, kernel, bias, k, s):
    out = kernel.shape[0]
    return np.stack([x[:, i * s:i * s + k].reshape(len(x), -1) @ kernel[i] for i in range(out)], 1) + bias


def np_local2d(x, kernel, bias, k, s):
    oh, ow = bias.shape[:2]
    cells = [x[:, i * s:i * s + k, j * s:j * s + k].reshape(len(x), -1) @ kernel[i * ow + j]
             for i in range(oh) for j in range(ow)]
    return np.stack(cells, 1).reshape(len(x), oh, ow, -1) + bias


def channels_first(reference):
    """A channels_last reference run on channels_first data."""
    def run(x, w):
        last = np.moveaxis(x, 1, -1)
        return np.moveaxis(reference(last, w), -1, 1)
    return run


def np_local2d_channels_first(x, kernel, bias, k):
    """LocallyConnected2D on channels_first: patches flatten as (channel, row, col); the bias,
    stored (rows, cols, filters), is reshaped (not transposed) to (filters, rows, cols) as the TF
    backend's bias_add does."""
    oh, ow, filters = bias.shape
    cells = [x[:, :, i:i + k, j:j + k].reshape(len(x), -1) @ kernel[i * ow + j] for i in range(oh) for j in range(ow)]
    return np.stack(cells, -1).reshape(len(x), -1, oh, ow) + bias.reshape(1, filters, oh, ow)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def hard_sigmoid(z):
    return np.clip(0.2 * z + 0.5, 0, 1)


def simple_rnn_cell(w):
    W, U, b = w
    return 1, lambda x, s: [np.tanh(x @ W + s[0] @ U + b)]


def lstm_cell(w, act=sigmoid):
    """Keras's gate order i, f, c, o (recurrent.py: LSTMCell)."""
    W, U, b = w
    u = U.shape[0]

    def step(x, s):
        h, c = s
        z = x @ W + h @ U + b
        i, f, o = act(z[:, :u]), act(z[:, u:2 * u]), act(z[:, 3 * u:])
        c = f * c + i * np.tanh(z[:, 2 * u:3 * u])
        return [o * np.tanh(c), c]
    return 2, step


def gru_cell(w, reset_after):
    """Gates z, r, h; reset_after applies r to the recurrent product with its own bias."""
    W, U, b = w
    u = U.shape[0]
    bi, br = (b[0], b[1]) if reset_after else (b, np.zeros_like(b))

    def step(x, s):
        h = s[0]
        xi, hr = x @ W + bi, h @ U + br
        z = sigmoid(xi[:, :u] + hr[:, :u])
        r = sigmoid(xi[:, u:2 * u] + hr[:, u:2 * u])
        if reset_after:
            cand = np.tanh(xi[:, 2 * u:] + r * hr[:, 2 * u:])
        else:
            cand = np.tanh(xi[:, 2 * u:] + (r * h) @ U[:, 2 * u:])
        return [z * h + (1 - z) * cand]
    return 1, step


def run_rnn(cells, x, units, return_sequences=False, go_backwards=False, mask=None):
    """Stacked cells over time; a masked step keeps every state and repeats the last output."""
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    states = [[np.zeros((len(x), u)) for _ in range(n)] for (n, _), u in zip(cells, units)]
    outputs, last = [], np.zeros((len(x), units[-1]))
    for t in steps:
        inp = x[:, t]
        new = []
        for (_, step), s in zip(cells, states):
            s2 = step(inp, s)
            new.append(s2)
            inp = s2[0]
        keep = np.ones((len(x), 1), bool) if mask is None else mask[:, t, None]
        states = [[np.where(keep, a, b) for a, b in zip(n2, s)] for n2, s in zip(new, states)]
        last = np.where(keep, inp, last)
        outputs.append(last)
    return np.stack(outputs, 1) if return_sequences else last


def conv_lstm(w, x, filters):
    """ConvLSTM2D: input conv 'valid', recurrent conv 'same', hard_sigmoid gates, order i f c o."""
    W, U, b = w
    f = filters
    h = c = None
    for t in range(x.shape[1]):
        zx = np_conv(x[:, t], W) + b
        if h is None:
            h = c = np.zeros(zx.shape[:-1] + (f,))
        z = zx + np_conv(h, U, padding="same")
        i, fg, o = hard_sigmoid(z[..., :f]), hard_sigmoid(z[..., f:2 * f]), hard_sigmoid(z[..., 3 * f:])
        c = fg * c + i * np.tanh(z[..., 2 * f:3 * f])
        h = o * np.tanh(c)
    return h


def keras_relu(x, negative_slope, max_value, threshold):
    y = np.where(x >= threshold, x, negative_slope * (x - threshold))
    return np.minimum(y, max_value)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# -- the single-input layers ----------------------------------------------------------------------
# id: (layer factory, per-sample input shape, numpy reference (x, weights) → output)
C = {
    # core
    "Dense": (lambda: L.Dense(3, activation="tanh"), (4,), lambda x, w: np.tanh(x @ w[0] + w[1])),
    "Dense_3d": (lambda: L.Dense(3), (2, 4), lambda x, w: x @ w[0] + w[1]),
    "Activation": (lambda: L.Activation("softplus"), (4,), lambda x, w: np.log1p(np.exp(x))),
    "Dropout": (lambda: L.Dropout(0.5), (4,), lambda x, w: x),
    "Flatten": (lambda: L.Flatten(), (2, 3), lambda x, w: x.reshape(len(x), -1)),
    "Reshape": (lambda: L.Reshape((3, 2)), (2, 3), lambda x, w: x.reshape(len(x), 3, 2)),
    "Reshape_infer": (lambda: L.Reshape((-1, 2)), (2, 3), lambda x, w: x.reshape(len(x), 3, 2)),
    "Permute": (lambda: L.Permute((2, 1)), (2, 3), lambda x, w: x.transpose(0, 2, 1)),
    "RepeatVector": (lambda: L.RepeatVector(3), (4,), lambda x, w: np.repeat(x[:, None], 3, 1)),
    "Lambda": (lambda: L.Lambda(lambda t: t[:, :2] * 2 + 1), (4,), lambda x, w: x[:, :2] * 2 + 1),
    "ActivityRegularization": (lambda: L.ActivityRegularization(0.1, 0.1), (4,), lambda x, w: x),
    "Masking": (lambda: L.Masking(0.0), (3, 2), lambda x, w: x * np.any(x != 0, -1, keepdims=True)),
    "SpatialDropout1D": (lambda: L.SpatialDropout1D(0.5), (3, 4), lambda x, w: x),
    "SpatialDropout2D": (lambda: L.SpatialDropout2D(0.5), (3, 3, 4), lambda x, w: x),
    "SpatialDropout3D": (lambda: L.SpatialDropout3D(0.5), (2, 3, 3, 4), lambda x, w: x),
    # channels_first
    "Conv1D_channels_first": (lambda: L.Conv1D(2, 3, data_format="channels_first"), (3, 6),
                              channels_first(lambda x, w: np_conv(x, w[0]) + w[1])),
    "SeparableConv2D_channels_first": (lambda: L.SeparableConv2D(2, 2, data_format="channels_first"), (2, 3, 4),
                                       channels_first(lambda x, w: np_conv(np_depthwise(x, w[0]), w[1]) + w[2])),
    "Conv2DTranspose_channels_first_output_padding": (
        lambda: L.Conv2DTranspose(2, 3, strides=2, output_padding=1, data_format="channels_first"), (2, 3, 2),
        channels_first(lambda x, w: np.pad(np_conv_transpose(x, w[0], 2, "valid"), [(0, 0), (0, 1), (0, 1), (0, 0)]) + w[1])),
    "MaxPooling2D_channels_first": (lambda: L.MaxPooling2D(2, data_format="channels_first"), (3, 4, 5),
                                    channels_first(lambda x, w: np_pool(x, 2, 2, "valid", "max"))),
    "AveragePooling1D_channels_first": (lambda: L.AveragePooling1D(2, data_format="channels_first"), (3, 4),
                                        channels_first(lambda x, w: np_pool(x, 2, 2, "valid", "avg"))),
    "UpSampling2D_bilinear_channels_first": (
        lambda: L.UpSampling2D((2, 3), data_format="channels_first", interpolation="bilinear"), (2, 3, 2),
        channels_first(lambda x, w: np_bilinear(x, 2, 3))),
    "Cropping2D_channels_first": (lambda: L.Cropping2D(((0, 1), (1, 1)), data_format="channels_first"), (2, 4, 4),
                                  lambda x, w: x[:, :, :-1, 1:-1]),
    "ZeroPadding3D_channels_first": (lambda: L.ZeroPadding3D(((1, 0), (0, 1), (1, 1)), data_format="channels_first"),
                                     (2, 2, 2, 2), lambda x, w: np.pad(x, [(0, 0), (0, 0), (1, 0), (0, 1), (1, 1)])),
    "LocallyConnected2D_channels_first": (lambda: L.LocallyConnected2D(2, 2, data_format="channels_first"), (2, 3, 4),
                                          lambda x, w: np_local2d_channels_first(x, w[0], w[1], 2)),
    "ConvLSTM2D_channels_first": (lambda: L.ConvLSTM2D(2, 2, data_format="channels_first"), (3, 2, 3, 3),
                                  lambda x, w: np.moveaxis(conv_lstm(w, np.moveaxis(x, 2, -1), 2), -1, 1)),
    "GlobalAveragePooling2D_channels_first": (lambda: L.GlobalAveragePooling2D(data_format="channels_first"),
                                              (3, 2, 2), lambda x, w: x.mean((2, 3))),
    # legacy (keras/legacy/layers.py, still exported by keras.layers)
    "Highway": (lambda: L.Highway(activation="tanh"), (4,),
                lambda x, w: (lambda t: np.tanh(x @ w[0] + w[2]) * t + (1 - t) * x)(sigmoid(x @ w[1] + w[3]))),
    "MaxoutDense": (lambda: L.MaxoutDense(3, nb_feature=2), (4,),
                    lambda x, w: (np.einsum("nd,kdo->nko", x, w[0]) + w[1]).max(1)),
    # convolutional
    "Conv1D": (lambda: L.Conv1D(2, 3, strides=2), (7, 3), lambda x, w: np_conv(x, w[0], 2) + w[1]),
    "Conv1D_causal_dilated": (lambda: L.Conv1D(2, 2, padding="causal", dilation_rate=2), (6, 3),
                              lambda x, w: np_conv(x, w[0], 1, "causal", 2) + w[1]),
    "Conv2D_same": (lambda: L.Conv2D(2, 3, strides=2, padding="same"), (5, 6, 3),
                    lambda x, w: np_conv(x, w[0], 2, "same") + w[1]),
    "Conv2D_dilated": (lambda: L.Conv2D(2, 2, dilation_rate=2, activation="relu"), (5, 5, 2),
                       lambda x, w: np.maximum(np_conv(x, w[0], 1, "valid", 2) + w[1], 0)),
    "Conv2D_channels_first": (lambda: L.Conv2D(2, 3, data_format="channels_first"), (3, 5, 4),
                              lambda x, w: (np_conv(x.transpose(0, 2, 3, 1), w[0]) + w[1]).transpose(0, 3, 1, 2)),
    "Conv3D": (lambda: L.Conv3D(2, 2, padding="same"), (3, 3, 3, 2), lambda x, w: np_conv(x, w[0], 1, "same") + w[1]),
    "SeparableConv1D": (lambda: L.SeparableConv1D(2, 3, depth_multiplier=2), (5, 3),
                        lambda x, w: np_conv(np_depthwise(x, w[0]), w[1]) + w[2]),
    "SeparableConv2D": (lambda: L.SeparableConv2D(2, 3, padding="same", strides=2), (5, 5, 3),
                        lambda x, w: np_conv(np_depthwise(x, w[0], 2, "same"), w[1]) + w[2]),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (5, 4, 3),
                        lambda x, w: np_depthwise(x, w[0]) + w[1]),
    "Conv2DTranspose_same": (lambda: L.Conv2DTranspose(2, 3, strides=2, padding="same"), (3, 2, 2),
                             lambda x, w: np_conv_transpose(x, w[0], 2, "same") + w[1]),
    "Conv2DTranspose_valid": (lambda: L.Conv2DTranspose(2, (2, 3), strides=(1, 2)), (3, 2, 2),
                              lambda x, w: np_conv_transpose(x, w[0], (1, 2), "valid") + w[1]),
    "Conv3DTranspose": (lambda: L.Conv3DTranspose(2, 2, strides=2), (2, 2, 2, 2),
                        lambda x, w: np_conv_transpose(x, w[0], 2, "valid") + w[1]),
    "Cropping1D": (lambda: L.Cropping1D((1, 2)), (5, 3), lambda x, w: x[:, 1:-2]),
    "Cropping2D": (lambda: L.Cropping2D(((1, 0), (0, 2))), (4, 5, 2), lambda x, w: x[:, 1:, :-2]),
    "Cropping3D": (lambda: L.Cropping3D(1), (4, 4, 4, 2), lambda x, w: x[:, 1:-1, 1:-1, 1:-1]),
    "UpSampling1D": (lambda: L.UpSampling1D(2), (3, 2), lambda x, w: np.repeat(x, 2, 1)),
    "UpSampling2D": (lambda: L.UpSampling2D((2, 3)), (3, 2, 2), lambda x, w: np.repeat(np.repeat(x, 2, 1), 3, 2)),
    "UpSampling2D_bilinear": (lambda: L.UpSampling2D(2, interpolation="bilinear"), (3, 4, 2),
                              lambda x, w: np_bilinear(x, 2, 2)),
    "UpSampling3D": (lambda: L.UpSampling3D(2), (2, 2, 2, 2),
                     lambda x, w: np.repeat(np.repeat(np.repeat(x, 2, 1), 2, 2), 2, 3)),
    "ZeroPadding1D": (lambda: L.ZeroPadding1D((1, 2)), (3, 2), lambda x, w: np.pad(x, [(0, 0), (1, 2), (0, 0)])),
    "ZeroPadding2D": (lambda: L.ZeroPadding2D(((1, 0), (2, 1))), (3, 3, 2),
                      lambda x, w: np.pad(x, [(0, 0), (1, 0), (2, 1), (0, 0)])),
    "ZeroPadding3D": (lambda: L.ZeroPadding3D(1), (2, 2, 2, 2), lambda x, w: np.pad(x, [(0, 0)] + [(1, 1)] * 3 + [(0, 0)])),
    # pooling
    "MaxPooling1D": (lambda: L.MaxPooling1D(2), (5, 2), lambda x, w: np_pool(x, 2, 2, "valid", "max")),
    "MaxPooling2D_same": (lambda: L.MaxPooling2D(2, padding="same"), (5, 4, 2), lambda x, w: np_pool(x, 2, 2, "same", "max")),
    "MaxPooling3D": (lambda: L.MaxPooling3D(2, strides=1), (3, 3, 3, 2), lambda x, w: np_pool(x, 2, 1, "valid", "max")),
    "AveragePooling1D_same": (lambda: L.AveragePooling1D(3, 2, padding="same"), (6, 2),
                              lambda x, w: np_pool(x, 3, 2, "same", "avg")),
    "AveragePooling2D_same": (lambda: L.AveragePooling2D(3, 2, padding="same"), (5, 5, 2),
                              lambda x, w: np_pool(x, 3, 2, "same", "avg")),
    "AveragePooling3D": (lambda: L.AveragePooling3D(2), (4, 4, 4, 2), lambda x, w: np_pool(x, 2, 2, "valid", "avg")),
    "GlobalMaxPooling1D": (lambda: L.GlobalMaxPooling1D(), (4, 2), lambda x, w: x.max(1)),
    "GlobalAveragePooling1D": (lambda: L.GlobalAveragePooling1D(), (4, 2), lambda x, w: x.mean(1)),
    "GlobalMaxPooling2D": (lambda: L.GlobalMaxPooling2D(), (3, 4, 2), lambda x, w: x.max((1, 2))),
    "GlobalAveragePooling2D": (lambda: L.GlobalAveragePooling2D(), (3, 4, 2), lambda x, w: x.mean((1, 2))),
    "GlobalMaxPooling3D": (lambda: L.GlobalMaxPooling3D(), (2, 3, 2, 2), lambda x, w: x.max((1, 2, 3))),
    "GlobalAveragePooling3D": (lambda: L.GlobalAveragePooling3D(), (2, 3, 2, 2), lambda x, w: x.mean((1, 2, 3))),
    # locally connected
    "LocallyConnected1D": (lambda: L.LocallyConnected1D(2, 3, strides=2), (7, 3),
                           lambda x, w: np_local1d(x, w[0], w[1], 3, 2)),
    "LocallyConnected2D": (lambda: L.LocallyConnected2D(2, 2), (3, 4, 2), lambda x, w: np_local2d(x, w[0], w[1], 2, 1)),
    # recurrent
    "SimpleRNN": (lambda: L.SimpleRNN(3), (4, 2), lambda x, w: run_rnn([simple_rnn_cell(w)], x, [3])),
    "SimpleRNN_sequences_backwards": (lambda: L.SimpleRNN(3, return_sequences=True, go_backwards=True), (4, 2),
                                      lambda x, w: run_rnn([simple_rnn_cell(w)], x, [3], True, True)),
    "GRU": (lambda: L.GRU(3), (4, 2), lambda x, w: run_rnn([gru_cell(w, False)], x, [3])),
    "GRU_reset_after": (lambda: L.GRU(3, reset_after=True, return_sequences=True), (4, 2),
                        lambda x, w: run_rnn([gru_cell(w, True)], x, [3], True)),
    "LSTM": (lambda: L.LSTM(3), (4, 2), lambda x, w: run_rnn([lstm_cell(w)], x, [3])),
    "LSTM_hard_sigmoid_unroll": (lambda: L.LSTM(3, recurrent_activation="hard_sigmoid", unroll=True), (4, 2),
                                 lambda x, w: run_rnn([lstm_cell(w, hard_sigmoid)], x, [3])),
    "Bidirectional_LSTM": (lambda: L.Bidirectional(L.LSTM(3)), (4, 2),
                           lambda x, w: np.concatenate([run_rnn([lstm_cell(w[:3])], x, [3]),
                                                        run_rnn([lstm_cell(w[3:])], x, [3], go_backwards=True)], -1)),
    "Bidirectional_GRU_sum_sequences": (lambda: L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode="sum"),
                                        (3, 2),
                                        lambda x, w: run_rnn([gru_cell(w[:3], False)], x, [2], True)
                                        + run_rnn([gru_cell(w[3:], False)], x, [2], True, True)[:, ::-1]),
    "RNN_stacked_cells": (lambda: L.RNN([L.SimpleRNNCell(3), L.LSTMCell(2)]), (4, 2),
                          lambda x, w: run_rnn([simple_rnn_cell(w[:3]), lstm_cell(w[3:])], x, [3, 2])),
    "ConvLSTM2D": (lambda: L.ConvLSTM2D(2, 2), (3, 4, 4, 2), lambda x, w: conv_lstm(w, x, 2)),
    # advanced activations
    "LeakyReLU": (lambda: L.LeakyReLU(0.2), (4,), lambda x, w: np.where(x > 0, x, 0.2 * x)),
    "PReLU": (lambda: L.PReLU(), (4,), lambda x, w: np.where(x > 0, x, w[0] * x)),
    "PReLU_shared_axes": (lambda: L.PReLU(shared_axes=[1]), (3, 2), lambda x, w: np.where(x > 0, x, w[0] * x)),
    "ELU": (lambda: L.ELU(0.5), (4,), lambda x, w: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "ThresholdedReLU": (lambda: L.ThresholdedReLU(0.3), (4,), lambda x, w: np.where(x > 0.3, x, 0)),
    "Softmax": (lambda: L.Softmax(axis=1), (3, 2), lambda x, w: softmax(x, 1)),
    "ReLU": (lambda: L.ReLU(max_value=0.8, negative_slope=0.1, threshold=0.2), (4,),
             lambda x, w: keras_relu(x, 0.1, 0.8, 0.2)),
    # normalization (inference form; both phases and the moving statistics: test_correctness.py)
    "BatchNormalization": (lambda: L.BatchNormalization(axis=1), (3, 2),
                           lambda x, w: (x - w[2][:, None]) / np.sqrt(w[3][:, None] + 1e-3) * w[0][:, None] + w[1][:, None]),
    # noise (inference: identity; training phase: test_noise_layers_in_the_training_phase)
    "GaussianNoise": (lambda: L.GaussianNoise(0.5), (4,), lambda x, w: x),
    "GaussianDropout": (lambda: L.GaussianDropout(0.3), (4,), lambda x, w: x),
    "AlphaDropout": (lambda: L.AlphaDropout(0.3), (4,), lambda x, w: x),
    # wrappers
    "TimeDistributed_Dense": (lambda: L.TimeDistributed(L.Dense(2)), (3, 4), lambda x, w: x @ w[0] + w[1]),
    "TimeDistributed_Conv2D": (lambda: L.TimeDistributed(L.Conv2D(2, 2)), (2, 3, 3, 2),
                               lambda x, w: np.stack([np_conv(x[:, t], w[0]) + w[1] for t in range(x.shape[1])], 1)),
}


def _randomize(layer, rng):
    weights = layer.get_weights()
    if isinstance(layer, L.BatchNormalization):  # gamma, beta, moving mean, moving variance > 0
        new = [rng.uniform(0.5, 2, w.shape) if i in (0, 3) else rng.normal(size=w.shape) for i, w in enumerate(weights)]
    else:
        new = [rng.normal(0, 0.5, w.shape) for w in weights]
    layer.set_weights([w.astype(np.float32) for w in new])
    return [w.astype(np.float64) for w in layer.get_weights()]


def _input(shape, rng, name):
    x = rng.normal(size=(3,) + shape)
    if name == "Masking":  # whole steps equal to the mask value
        x[0, 1] = 0
        x[2, 0] = 0
    return x.astype(np.float32)


def _trainable_head(out):
    """Flatten (when needed) + Dense(1): every layer trains through a loss of the same form.  The
    flattening Lambda ends a mask (Masking's), which Flatten would refuse."""
    flat = L.Lambda(K.batch_flatten, mask=lambda inputs, mask: None)(out) if len(KB.int_shape(out)) > 2 else out
    return L.Dense(1)(flat)


@pytest.mark.parametrize("name", list(C))
def test_layer_forward_matches_numpy_and_trains_a_step(name):
    make, shape, reference = C[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    layer = make()
    inp = L.Input(shape)
    out = layer(inp)
    weights = _randomize(layer, rng)
    x = _input(shape, rng, name)
    expected = reference(x.astype(np.float64), weights)
    probe = models.Model(inp, out)
    got = probe.predict(x)
    assert KB.int_shape(out)[1:] == expected.shape[1:] == got.shape[1:], "static shape"
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    model = models.Model(inp, _trainable_head(out))
    model.compile("sgd", "mse")
    before = [w.copy() for w in layer.get_weights()]
    loss = model.train_on_batch(x, rng.normal(size=(len(x), 1)).astype(np.float32))
    assert np.isfinite(loss)
    trainable = {id(w) for w in layer.trainable_weights}
    for w, old, new in zip(layer.weights, before, layer.get_weights()):
        if id(w) in trainable:
            assert not np.array_equal(old, new), f"{w.name} did not move"


def _finite_differences(f, arrays, i, eps=1e-6):
    """d f / d arrays[i], central differences, one element at a time."""
    grad = np.zeros_like(arrays[i])
    for idx in np.ndindex(*arrays[i].shape):
        a = arrays[i]
        old = a[idx]
        a[idx] = old + eps
        up = f(arrays)
        a[idx] = old - eps
        down = f(arrays)
        a[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


@pytest.fixture
def float64():
    K.set_floatx("float64")
    yield
    K.set_floatx("float32")


@pytest.mark.parametrize("name", list(C))
def test_layer_gradients_match_numpy_in_float64(name, float64):
    """K.gradients through the layer (weights and input) against central differences of the
    numpy reference, all in float64: the backward pass Keras trains with, checked per layer."""
    make, shape, reference = C[name]
    rng = np.random.default_rng(sum(map(ord, name)) + 1)
    layer = make()
    inp = L.Input(shape)
    out = layer(inp)
    weights = _randomize(layer, rng)
    x = _input(shape, rng, name).astype(np.float64)
    r = rng.normal(size=reference(x, weights).shape)
    f = K.function([inp], K.gradients(K.sum(out * K.constant(r)), layer.weights + [inp]))
    got = f([x])
    arrays = weights + [x]
    wrt = range(len(arrays) - (name == "Masking"))  # a masked step is a jump in the input

    def objective(a):
        return (reference(a[-1], a[:-1]) * r).sum()
    for i in wrt:
        assert got[i].dtype == np.float64
        np.testing.assert_allclose(got[i], _finite_differences(objective, arrays, i), rtol=1e-5, atol=1e-7,
                                   err_msg=(layer.weights + [inp])[i].name)


# -- layers of several inputs ---------------------------------------------------------------------
def _l2n(v):
    return v / np.sqrt(np.maximum((v * v).sum(-1, keepdims=True), 1e-12))


MERGE = {
    "Add": (lambda: L.Add(), lambda a, b, c: a + b + c),
    "Subtract": (lambda: L.Subtract(), lambda a, b: a - b),
    "Multiply": (lambda: L.Multiply(), lambda a, b, c: a * b * c),
    "Average": (lambda: L.Average(), lambda a, b: (a + b) / 2),
    "Maximum": (lambda: L.Maximum(), lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    "Minimum": (lambda: L.Minimum(), lambda a, b: np.minimum(a, b)),
    "Concatenate": (lambda: L.Concatenate(axis=1), lambda a, b: np.concatenate([a, b], 1)),
    "Dot": (lambda: L.Dot(axes=2), lambda a, b: np.einsum("nij,nkj->nik", a, b)),
    "Dot_normalized": (lambda: L.Dot(axes=(1, 1), normalize=True),
                       lambda a, b: np.einsum("nij,nik->njk", _l2n(a.transpose(0, 2, 1)).transpose(0, 2, 1),
                                              _l2n(b.transpose(0, 2, 1)).transpose(0, 2, 1))),
}


@pytest.mark.parametrize("name", list(MERGE))
def test_merge_layers_match_numpy_and_train(name):
    make, reference = MERGE[name]
    n_in = reference.__code__.co_argcount
    rng = np.random.default_rng(sum(map(ord, name)))
    inputs = [L.Input((3, 4)) for _ in range(n_in)]
    dense = L.Dense(4)  # a weight before the merge, so the step has something to train
    out = make()([dense(inputs[0])] + inputs[1:])
    xs = [rng.normal(size=(2, 3, 4)).astype(np.float32) for _ in range(n_in)]
    w, b = (v.astype(np.float64) for v in dense.get_weights())
    expected = reference(xs[0] @ w + b, *[x.astype(np.float64) for x in xs[1:]])
    got = models.Model(inputs, out).predict(xs)
    assert KB.int_shape(out)[1:] == expected.shape[1:]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    model = models.Model(inputs, _trainable_head(out))
    model.compile("adam", "mse")
    assert np.isfinite(model.train_on_batch(xs, np.zeros((2, 1), np.float32)))
    assert not np.allclose(dense.get_weights()[0], w)


def test_embedding_and_masked_rnn_match_numpy():
    rng = np.random.default_rng(11)
    inp = L.Input((5,), dtype="int32")
    emb = L.Embedding(7, 3, mask_zero=True)
    rnn = L.SimpleRNN(4, return_sequences=True)
    out = rnn(emb(inp))
    model = models.Model(inp, out)
    table = _randomize(emb, rng)[0]
    rnn_w = _randomize(rnn, rng)
    ids = np.array([[1, 2, 0, 3, 0], [0, 0, 4, 5, 6], [6, 5, 4, 3, 2]], np.int32)
    expected = run_rnn([simple_rnn_cell(rnn_w)], table[ids], [4], return_sequences=True, mask=ids != 0)
    np.testing.assert_allclose(model.predict(ids), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(models.Model(inp, emb(inp)).predict(ids), table[ids], rtol=1e-6)
    model.compile("rmsprop", "mse")
    assert np.isfinite(model.train_on_batch(ids, np.zeros((3, 5, 4), np.float32)))
    moved = emb.get_weights()[0] != table
    assert moved[[1, 2, 3, 4, 5, 6]].any(axis=1).all()  # every id that occurs gets a gradient


def test_masked_bidirectional_lstm_matches_numpy():
    rng = np.random.default_rng(14)
    inp = L.Input((None,), dtype="int32")
    emb = L.Embedding(6, 3, mask_zero=True)
    bi = L.Bidirectional(L.LSTM(2, return_sequences=True))
    model = models.Model(inp, bi(emb(inp)))
    table, w = _randomize(emb, rng)[0], _randomize(bi, rng)
    ids = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [5, 4, 3, 2, 1]], np.int32)
    x, mask = table[ids], ids != 0
    forward = run_rnn([lstm_cell(w[:3])], x, [2], return_sequences=True, mask=mask)
    backward = run_rnn([lstm_cell(w[3:])], x, [2], return_sequences=True, go_backwards=True, mask=mask)
    np.testing.assert_allclose(model.predict(ids), np.concatenate([forward, backward[:, ::-1]], -1),
                               rtol=RTOL, atol=ATOL)
    model.compile("adam", "mse")
    assert np.isfinite(model.train_on_batch(ids, np.zeros((3, 5, 4), np.float32)))


@pytest.mark.parametrize("length", [5, None])
def test_time_distributed_passes_the_mask_on(length):
    # wrappers.py:280-330: TimeDistributed reshapes the inner layer's mask back per step
    rng = np.random.default_rng(18)
    inp = L.Input((length,), dtype="int32")
    emb, td, rnn = L.Embedding(6, 3, mask_zero=True), L.TimeDistributed(L.Dense(4)), L.SimpleRNN(2)
    model = models.Model(inp, rnn(td(emb(inp))))
    table, (w, b), rnn_w = _randomize(emb, rng)[0], _randomize(td, rng), _randomize(rnn, rng)
    ids = np.array([[1, 2, 0, 3, 0], [0, 4, 5, 0, 1]], np.int32)
    expected = run_rnn([simple_rnn_cell(rnn_w)], table[ids] @ w + b, [2], mask=ids != 0)
    np.testing.assert_allclose(model.predict(ids), expected, rtol=RTOL, atol=ATOL)


def test_stateful_lstm_carries_its_state_between_batches():
    rng = np.random.default_rng(15)
    layer = L.LSTM(3, stateful=True, batch_input_shape=(2, 4, 2))
    model = models.Sequential([layer])
    w = _randomize(layer, rng)
    x = rng.normal(size=(2, 4, 2)).astype(np.float32)
    first, second = model.predict(x), model.predict(x)
    np.testing.assert_allclose(first, run_rnn([lstm_cell(w)], x.astype(np.float64), [3]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(second, run_rnn([lstm_cell(w)], np.concatenate([x, x], 1).astype(np.float64), [3]),
                               rtol=RTOL, atol=ATOL)
    model.reset_states()
    np.testing.assert_allclose(model.predict(x), first, rtol=1e-6)


def test_initial_state_and_return_state_match_numpy():
    rng = np.random.default_rng(16)
    inp, h0, c0 = L.Input((4, 2)), L.Input((3,)), L.Input((3,))
    lstm = L.LSTM(3, return_sequences=True, return_state=True)
    model = models.Model([inp, h0, c0], lstm(inp, initial_state=[h0, c0]))
    w = _randomize(lstm, rng)
    x, h, c = (rng.normal(size=s).astype(np.float32) for s in ((2, 4, 2), (2, 3), (2, 3)))
    _, step = lstm_cell(w)
    state, outputs = [h.astype(np.float64), c.astype(np.float64)], []
    for t in range(4):
        state = step(x[:, t].astype(np.float64), state)
        outputs.append(state[0])
    for got, want in zip(model.predict([x, h, c]), [np.stack(outputs, 1)] + state):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_recurrent_dropout_only_in_the_training_phase():
    rng = np.random.default_rng(17)
    layer = L.GRU(3, dropout=0.3, recurrent_dropout=0.3)
    inp = L.Input((4, 2))
    out = layer(inp)
    w = _randomize(layer, rng)
    x = rng.normal(size=(6, 4, 2)).astype(np.float32)
    f = K.function([inp, K.learning_phase()], [out])
    np.testing.assert_allclose(f([x, 0])[0], run_rnn([gru_cell(w, False)], x.astype(np.float64), [3]),
                               rtol=RTOL, atol=ATOL)
    assert not np.allclose(f([x, 1])[0], f([x, 1])[0])  # fresh masks each call
    model = models.Model(inp, _trainable_head(out))
    model.compile("adam", "mse")
    assert np.isfinite(model.fit(x, np.zeros((6, 1)), epochs=2, verbose=0).history["loss"]).all()


def test_activity_regularization_adds_its_penalty_to_the_loss():
    model = models.Sequential([L.ActivityRegularization(l1=0.1, l2=0.01, input_shape=(4,))])
    model.compile("sgd", "mse")
    x = np.random.default_rng(12).normal(size=(5, 4)).astype(np.float32)
    # keras/regularizers.py L1L2: l1 sum|x| + l2 sum x^2 over the whole batch, added to the mean mse
    expected = 0.1 * np.abs(x).sum() + 0.01 * (x.astype(np.float64) ** 2).sum()
    np.testing.assert_allclose(model.test_on_batch(x, x), expected, rtol=1e-5)


def _training_phase(layer, x):
    np.random.seed(19)  # the layers' seed=None draws from numpy's global generator: fixed draws
    inp = L.Input(x.shape[1:])
    f = K.function([inp, K.learning_phase()], [layer(inp)])
    return f([x, 1])[0].astype(np.float64)


def test_noise_layers_in_the_training_phase():
    rng = np.random.default_rng(13)
    x = rng.uniform(0.5, 1.5, (200, 50)).astype(np.float32)
    x64 = x.astype(np.float64)
    kept = _training_phase(L.Dropout(0.4), x)
    assert np.allclose(kept[kept != 0], (x64 / 0.6)[kept != 0], rtol=1e-6)
    assert abs((kept == 0).mean() - 0.4) < 0.02
    noisy = _training_phase(L.GaussianNoise(0.5), x) - x64
    assert abs(noisy.mean()) < 0.02 and abs(noisy.std() - 0.5) < 0.02
    ratio = _training_phase(L.GaussianDropout(0.3), x) / x64  # x * N(1, sqrt(rate / (1 - rate)))
    assert abs(ratio.mean() - 1) < 0.03 and abs(ratio.std() - np.sqrt(0.3 / 0.7)) < 0.03
    # AlphaDropout (keras/layers/noise.py): a * where(kept, x, alpha') + b
    rate, alpha_p = 0.3, -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * rate
    y = _training_phase(L.AlphaDropout(rate), x)
    dropped = np.isclose(y, a * alpha_p + b, rtol=1e-6)
    np.testing.assert_allclose(y[~dropped], (a * x64 + b)[~dropped], rtol=1e-5)
    assert abs(dropped.mean() - rate) < 0.02


@pytest.mark.parametrize("layer, rank", [(L.SpatialDropout1D, 3), (L.SpatialDropout2D, 4), (L.SpatialDropout3D, 5)])
def test_spatial_dropout_drops_whole_channels(layer, rank):
    shape = (40,) + (3,) * (rank - 2) + (25,)
    x = np.random.default_rng(rank).uniform(0.5, 1.5, shape).astype(np.float32)
    y = _training_phase(layer(0.5), x)
    spatial = tuple(range(1, rank - 1))
    zero = (y == 0).all(spatial)
    assert ((y == 0).any(spatial) == zero).all()  # a channel goes whole or not at all
    np.testing.assert_allclose(y.transpose(0, rank - 1, *spatial)[~zero],
                               (x.astype(np.float64) * 2).transpose(0, rank - 1, *spatial)[~zero], rtol=1e-6)
    assert abs(zero.mean() - 0.5) < 0.06


@pytest.mark.parametrize("layer", [L.CuDNNGRU, L.CuDNNLSTM])
def test_cudnn_rnn_layers_are_a_clear_error(layer):
    # keras/layers/cudnn_recurrent.py:36-38: the layers wrap TF's cuDNN kernels; GRU/LSTM with
    # their defaults compute the same cells on kgraph (and export to ONNX GRU/LSTM)
    with pytest.raises(RuntimeError, match="only available with the TensorFlow backend"):
        models.Sequential([layer(3, input_shape=(4, 2))])


def test_every_layer_family_of_keras_layers_is_covered():
    """The layer classes keras.layers exports, against those the tests above build."""
    import keras.layers as kl
    built = set()
    for make, *_ in list(C.values()) + list(MERGE.values()):
        layer = make()
        built.add(type(layer).__name__)
        inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
        if inner is not None:
            built.add(type(inner).__name__)
        cells = getattr(getattr(layer, "cell", None), "cells", None)
        built.update(type(c).__name__ for c in cells or ())
    built |= {"Embedding", "InputLayer", "CuDNNGRU", "CuDNNLSTM",
              # the cells and RNN are what SimpleRNN/GRU/LSTM/ConvLSTM2D run; StackedRNNCells holds RNN_stacked_cells
              "SimpleRNNCell", "GRUCell", "LSTMCell", "ConvLSTM2DCell", "StackedRNNCells", "RNN"}
    exported = {name for name, obj in vars(kl).items() if isinstance(obj, type) and issubclass(obj, kl.Layer)}
    aliases = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
               "Deconvolution2D", "Deconvolution3D", "Conv2DTranspose", "Conv3DTranspose",
               "SeparableConvolution1D", "SeparableConvolution2D", "AtrousConvolution1D", "AtrousConvolution2D",
               "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
               "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D",
               "GlobalAvgPool3D"}
    abstract = {"Layer", "Wrapper", "Network", "Model", "Sequential", "Merge", "InputSpec",
                "Recurrent", "ConvRecurrent2D"}  # the last two: legacy base classes
    missing = {n for n in exported - built - abstract
               if not (n in aliases and vars(kl)[n].__name__ in built) and vars(kl)[n].__name__ not in built}
    assert not missing, sorted(missing)
