"""CTC: loss, decoding, and dense labels to sparse — Keras 2.3.1's TensorFlow backend semantics."""
import numbers

from .. import dtypes
from ..ops import ctc as ctc_ops
from ..ops import ctc_decode as decode_ops
from ..ops import elementwise as ew
from ..ops import shape as sh
from ..ops import sparse as sparse_ops
from ._api import keras_api, to_tensor
from .config import epsilon
from .sparse import make_sparse


def _lengths(x, name, where, squeeze_last):
    """Keras passes lengths as (samples, 1) to ctc_batch_cost and (samples,) to ctc_decode."""
    x = to_tensor(x, where=f"{where}: {name}")
    if not (dtypes.is_int(x.dtype) or dtypes.is_float(x.dtype)):
        raise TypeError(f"{where}: {name} must hold integer lengths, got dtype {x.dtype}")
    if squeeze_last:
        if x.ndim != 2 or x.shape[1] not in (1, None):
            raise ValueError(f"{where}: {name} must have shape (samples, 1), got {x.shape}")
        x = sh.squeeze(x, axes=(1,))
    elif x.ndim != 1:
        raise ValueError(f"{where}: {name} must have shape (samples,), got {x.shape}")
    return x if x.dtype == "int32" else ew.cast(x, dtype="int32")


def _probabilities(y_pred, where):
    y_pred = to_tensor(y_pred, where=f"{where}: y_pred")
    if y_pred.ndim != 3:
        raise ValueError(f"{where}: y_pred must have shape (samples, time_steps, num_categories), "
                         f"got {y_pred.shape}")
    if not dtypes.is_float(y_pred.dtype):
        raise TypeError(f"{where}: y_pred must be a float tensor of probabilities, got dtype {y_pred.dtype}")
    # Keras feeds log(y_pred + epsilon) to TensorFlow's CTC ops as their "logits"
    return ew.log(ew.add(y_pred, ew.scalar_like(epsilon(), y_pred)))


@keras_api
def ctc_batch_cost(y_true, y_pred, input_length, label_length):
    """(samples, 1) CTC losses.  As Keras 2.3.1: labels are cast to int32, the loss is TensorFlow's
    ``ctc_loss`` of ``log(y_pred + epsilon)`` (which it log-softmaxes again), blank = last class."""
    where = "K.ctc_batch_cost"
    logits = _probabilities(y_pred, where)
    y_true = to_tensor(y_true, where=f"{where}: y_true")
    if y_true.ndim != 2:
        raise ValueError(f"{where}: y_true must have shape (samples, max_string_length), got {y_true.shape}")
    if y_true.dtype == "bool":
        raise TypeError(f"{where}: y_true must hold integer labels, got dtype bool")
    labels = y_true if y_true.dtype == "int32" else ew.cast(y_true, dtype="int32")
    loss = ctc_ops.ctc_loss(logits, labels, _lengths(input_length, "input_length", where, True),
                            _lengths(label_length, "label_length", where, True))
    return sh.unsqueeze(loss, axes=(1,))


def _positive_int(value, name, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
    return int(value)


@keras_api
def ctc_decode(y_pred, input_length, greedy=True, beam_width=100, top_paths=1, merge_repeated=False):
    """``(decoded, log_prob)``: ``decoded`` is a list (one entry per path) of int64 (samples, n)
    tensors padded with -1.  Greedy search ignores ``merge_repeated`` and always merges repeats,
    because Keras 2.3.1 calls ``ctc_greedy_decoder`` with TensorFlow's default; its log_prob is
    (samples, 1), the negative sum of the per-frame maxima.  Beam search returns ``top_paths``
    paths and (samples, top_paths) scores."""
    where = "K.ctc_decode"
    log_probs = _probabilities(y_pred, where)
    lengths = _lengths(input_length, "input_length", where, False)
    if greedy:
        decoded, log_prob = decode_ops.greedy_decode(log_probs, lengths)
        return [decoded], log_prob
    beam_width = _positive_int(beam_width, "beam_width", where)
    top_paths = _positive_int(top_paths, "top_paths", where)
    if top_paths > beam_width:
        raise ValueError(f"{where}: top_paths ({top_paths}) must be <= beam_width ({beam_width})")
    *decoded, log_prob = decode_ops.beam_search_decode(log_probs, lengths, beam_width=beam_width,
                                                       top_paths=top_paths, merge_repeated=bool(merge_repeated))
    return list(decoded), log_prob


@keras_api
def ctc_label_dense_to_sparse(labels, label_lengths):
    """A sparse (samples, max_length) tensor holding ``labels[b, :label_lengths[b]]``, its indices
    in row-major order and its values of the labels' dtype, as Keras 2.3.1 builds it."""
    where = "K.ctc_label_dense_to_sparse"
    labels = to_tensor(labels, where=f"{where}: labels")
    if labels.ndim != 2:
        raise ValueError(f"{where}: labels must have shape (samples, max_length), got {labels.shape}")
    label_lengths = to_tensor(label_lengths, where=f"{where}: label_lengths")
    if label_lengths.ndim != 1 or not dtypes.is_int(label_lengths.dtype):
        raise ValueError(f"{where}: label_lengths must be a 1-D integer tensor (samples,), got shape "
                         f"{label_lengths.shape} dtype {label_lengths.dtype}")
    indices = sparse_ops.nonzero_indices(ctc_ops.label_mask(label_lengths, labels))
    values = sparse_ops.gather_nd(labels, indices)
    return make_sparse(indices, values, sh.shape_of(labels), labels.shape)
