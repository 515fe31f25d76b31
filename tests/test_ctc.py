"""CTC against independent numpy implementations: the loss and its gradient against a
forward-backward written here, the decoders against brute-force enumeration of alignments and
against a transliteration of TensorFlow's beam search; the exported training step against the
full checker, a fresh onnxruntime session and onnx.reference."""
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph.backend as K
from kcheck import check, check_grad, evaluate
from kgraph.lower import CUSTOM_DOMAIN

EPS = 1e-7  # Keras' default epsilon

# onnx.reference evaluates log(0) = -inf (unreachable lattice states) with numpy, which warns
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning",
                                        "ignore:invalid value encountered in subtract:RuntimeWarning")


# -- numpy references ----------------------------------------------------------------------------
def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_ctc(y_pred, labels, input_length, label_length, eps=EPS):
    """Keras 2.3.1's ctc_batch_cost in float64: TF's ctc_loss of log(y + eps), i.e. of the
    log-softmax of those logits.  Returns (losses (B,), d sum(losses) / d y_pred)."""
    y = np.asarray(y_pred, np.float64)
    logits = np.log(y + eps)
    losses, grads = [], np.zeros_like(y)
    for b in range(y.shape[0]):
        T, L = int(input_length[b]), int(label_length[b])
        lp = _log_softmax(logits[b])[:T]
        blank = y.shape[2] - 1
        ext = [blank]
        for label in labels[b][:L]:
            ext += [int(label), blank]
        S = len(ext)
        alpha = np.full((T, S), -np.inf)
        beta = np.full((T, S), -np.inf)

        def allowed_skip(s):
            return s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]

        if T:
            alpha[0, 0] = lp[0, ext[0]]
            if S > 1:
                alpha[0, 1] = lp[0, ext[1]]
            for t in range(1, T):
                for s in range(S):
                    terms = [alpha[t - 1, s]] + ([alpha[t - 1, s - 1]] if s >= 1 else []) + \
                            ([alpha[t - 1, s - 2]] if allowed_skip(s) else [])
                    alpha[t, s] = np.logaddexp.reduce(terms) + lp[t, ext[s]]
            beta[T - 1, S - 1] = lp[T - 1, ext[S - 1]]
            if S > 1:
                beta[T - 1, S - 2] = lp[T - 1, ext[S - 2]]
            for t in range(T - 2, -1, -1):
                for s in range(S):
                    terms = [beta[t + 1, s]] + ([beta[t + 1, s + 1]] if s + 1 < S else []) + \
                            ([beta[t + 1, s + 2]] if s + 2 < S and allowed_skip(s + 2) else [])
                    beta[t, s] = np.logaddexp.reduce(terms) + lp[t, ext[s]]
            log_p = np.logaddexp(alpha[T - 1, S - 1], alpha[T - 1, S - 2] if S > 1 else -np.inf)
        else:
            log_p = 0.0 if L == 0 else -np.inf
        losses.append(-log_p)
        # d loss / d logits = softmax - occupancy (TF's gradient); softmax alone with no valid path
        d_logits = np.exp(lp)
        if np.isfinite(log_p):
            occupancy = np.exp(alpha + beta - lp[:, ext] - log_p)
            for s, c in enumerate(ext):
                d_logits[:, c] -= occupancy[:, s]
        # through log_softmax of log(y + eps): d logits / d y = 1 / (y + eps)
        grads[b, :T] = d_logits / (y[b, :T] + eps)
    return np.array(losses), grads


def _collapse(path, blank):
    out, prev = [], None
    for c in path:
        if c != blank and c != prev:
            out.append(c)
        prev = c
    return tuple(out)


def np_labelings(y_pred, length, eps=EPS):
    """Brute force: the probability (unnormalized y + eps, as TF's decoders see them) of every
    labeling, by summing over every alignment of the first ``length`` frames."""
    probs = {}
    y = np.asarray(y_pred, np.float64)[:length] + eps
    blank = y.shape[1] - 1
    for path in itertools.product(range(y.shape[1]), repeat=length):
        p = np.prod(y[np.arange(length), path])
        key = _collapse(path, blank)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def _merge(labels):
    return tuple(c for i, c in enumerate(labels) if i == 0 or c != labels[i - 1])


def np_tf_beam_search(y_pred, length, beam_width, top_paths, eps=EPS):
    """TensorFlow's CTCBeamSearchDecoder (ctc_beam_search.h) transliterated: a trie of prefixes,
    a TopN of beam entries, children added while they beat the bottom entry."""
    x_all = np.log(np.asarray(y_pred, np.float64)[:length] + eps)
    num_classes = x_all.shape[1]
    blank = num_classes - 1
    new = {(): [0.0, -np.inf]}  # prefix → [blank, label] log-probabilities at the current step
    beam = [()]

    def total(p):
        return np.logaddexp(*new[p])

    for x in x_all:
        x = x - x.max()
        branches = sorted(beam, key=total, reverse=True)
        in_beam_before = set(beam)
        old = {p: (new[p][0], new[p][1], total(p)) for p in branches}
        beam = []
        for b in branches:
            label = -np.inf
            if b:
                label = old[b][1]
                parent = b[:-1]
                if parent in in_beam_before:
                    previous = old[parent][0] if parent and parent[-1] == b[-1] else old[parent][2]
                    label = np.logaddexp(label, previous)
                label += x[b[-1]]
            new[b] = [old[b][2] + x[blank], label]
            beam.append(b)

        def bottom():
            return min(beam, key=total)

        def is_candidate(score):
            return score > -np.inf and (len(beam) < beam_width or score > total(bottom()))

        for b in branches:
            if not is_candidate(old[b][2]):
                continue
            for c in range(num_classes - 1):
                child = b + (c,)
                if child in beam:
                    continue
                previous = old[b][0] if b and b[-1] == c else old[b][2]
                score = x[c] + previous
                if is_candidate(score):
                    if len(beam) == beam_width:
                        beam.remove(bottom())
                    new[child] = [-np.inf, score]
                    beam.append(child)
    ranked = sorted(beam, key=total, reverse=True)[:top_paths]
    return ranked, [total(p) for p in ranked]


def _softmax_batch(rng, shape, blank_bias=0.0):
    logits = rng.standard_normal(shape)
    logits[..., -1] += blank_bias
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _placeholders(y, labels, dtype="float32"):
    return (K.placeholder((None,) + labels.shape[1:], dtype="int32"),
            K.placeholder((None, None, y.shape[2]), dtype=dtype),
            K.placeholder((None, 1), dtype="int32"), K.placeholder((None, 1), dtype="int32"))


# -- loss and gradient -------------------------------------------------------------------------
CASES = {
    # name: (labels, input lengths, label lengths, blank bias)
    "plain": ([[0, 1, 2], [2, 0, 1], [1, 2, 0]], [6, 6, 6], [3, 3, 3], 0.0),
    "repeated labels": ([[1, 1, 0], [2, 2, 2], [0, 1, 1]], [6, 6, 5], [3, 3, 3], 0.0),
    "variable lengths": ([[0, 1, -1], [2, -1, -1], [1, 2, 0]], [6, 3, 5], [2, 1, 3], 0.0),
    "blank heavy": ([[0, 1, 0], [2, 2, 0], [1, 0, 2]], [6, 5, 6], [3, 2, 1], 4.0),
    "empty labels": ([[0, 0, 0], [1, 2, 0], [2, 0, 0]], [6, 2, 0], [0, 2, 0], 0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ctc_batch_cost_and_gradient_match_numpy_forward_backward(case):
    labels, in_len, lab_len, bias = CASES[case]
    rng = np.random.default_rng(len(case))
    y = _softmax_batch(rng, (3, 6, 4), bias).astype(np.float32)
    labels = np.array(labels, np.int32)
    in_len = np.array(in_len, np.int32)[:, None]
    lab_len = np.array(lab_len, np.int32)[:, None]
    expected_loss, expected_grad = np_ctc(y, labels, in_len[:, 0], lab_len[:, 0])
    lt, yp, il, ll = _placeholders(y, labels)
    loss = K.ctc_batch_cost(lt, yp, il, ll)
    assert K.int_shape(loss) == (None, 1)
    grad = K.gradients(K.sum(loss), [yp])[0]
    check([loss, grad], {lt: labels, yp: y, il: in_len, ll: lab_len},
          [expected_loss[:, None].astype(np.float32), expected_grad.astype(np.float32)], rtol=2e-4, atol=2e-5)


def test_impossible_alignment_gives_inf_loss_and_softmax_gradient():
    # "aa" needs three frames (a, blank, a); two are too few: TF's "no valid path"
    rng = np.random.default_rng(3)
    y = _softmax_batch(rng, (2, 3, 3)).astype(np.float32)
    labels = np.array([[1, 1], [0, 1]], np.int32)
    in_len = np.array([[2], [3]], np.int32)
    lab_len = np.array([[2], [2]], np.int32)
    expected_loss, expected_grad = np_ctc(y, labels, in_len[:, 0], lab_len[:, 0])
    assert np.isinf(expected_loss[0])
    lt, yp, il, ll = _placeholders(y, labels)
    loss = K.ctc_batch_cost(lt, yp, il, ll)
    grad = K.gradients(K.sum(loss), [yp])[0]
    check([loss, grad], {lt: labels, yp: y, il: in_len, ll: lab_len},
          [expected_loss[:, None].astype(np.float32), expected_grad.astype(np.float32)], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("batch,time,classes,label_width", [(2, 4, 3, 2), (1, 5, 4, 3)])
def test_ctc_batch_cost_gradient_finite_differences(batch, time, classes, label_width):
    rng = np.random.default_rng(batch * 10 + time)
    y = _softmax_batch(rng, (batch, time, classes)) + 0.05
    labels = rng.integers(0, classes - 1, size=(batch, label_width))
    in_len = np.full((batch, 1), time)
    in_len[0, 0] = time - 1  # a shorter sequence: its last frame has no gradient
    lab_len = np.full((batch, 1), label_width)

    def build(yp):
        return K.ctc_batch_cost(K.constant(labels, dtype="int32"), yp, K.constant(in_len, dtype="int32"),
                                K.constant(lab_len, dtype="int32"))

    analytic = check_grad(build, [y], eps=1e-6, rtol=1e-5, atol=1e-7)
    assert np.all(analytic[0][0, time - 1] == 0)


def test_ctc_batch_cost_float64_and_label_dtypes():
    rng = np.random.default_rng(7)
    y = _softmax_batch(rng, (2, 5, 3))
    labels = np.array([[0.0, 1.0], [1.0, 1.0]])  # Keras passes float labels: cast to int32
    in_len, lab_len = np.array([[5], [5]]), np.array([[2], [2]])
    expected, _ = np_ctc(y, labels.astype(int), in_len[:, 0], lab_len[:, 0])
    yp = K.placeholder((None, 5, 3), dtype="float64")
    lt = K.placeholder((None, 2), dtype="float32")
    loss = K.ctc_batch_cost(lt, yp, K.constant(in_len, dtype="int64"), K.constant(lab_len, dtype="float32"))
    assert K.dtype(loss) == "float64"
    check(loss, {yp: y, lt: labels}, expected[:, None], rtol=1e-9, atol=1e-10)


def test_ctc_batch_cost_argument_errors():
    yp = K.placeholder((None, 5, 3))
    lt = K.placeholder((None, 2))
    lengths = K.placeholder((None, 1), dtype="int32")
    with pytest.raises(ValueError, match="K.ctc_batch_cost: y_pred"):
        K.ctc_batch_cost(lt, K.placeholder((None, 5)), lengths, lengths)
    with pytest.raises(ValueError, match="K.ctc_batch_cost: input_length must have shape"):
        K.ctc_batch_cost(lt, yp, K.placeholder((None,), dtype="int32"), lengths)
    with pytest.raises(ValueError, match="K.ctc_batch_cost: y_true"):
        K.ctc_batch_cost(K.placeholder((None,)), yp, lengths, lengths)
    with pytest.raises(ValueError, match="K.ctc_batch_cost: .*batch sizes differ"):
        K.ctc_batch_cost(K.placeholder((3, 2)), K.placeholder((2, 5, 3)), lengths, lengths)


# -- decoding --------------------------------------------------------------------------------
def _decode(y, lengths, **kwargs):
    yp = K.placeholder((None, None, y.shape[2]), dtype=str(y.dtype))
    il = K.placeholder((None,), dtype="int32")
    decoded, log_prob = K.ctc_decode(yp, il, **kwargs)
    return yp, il, decoded, log_prob


def _dense(sequences):
    width = max([len(s) for s in sequences] + [0])
    out = np.full((len(sequences), width), -1, np.int64)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = s
    return out


def test_greedy_decode_matches_numpy_best_path():
    rng = np.random.default_rng(11)
    y = _softmax_batch(rng, (4, 7, 4), blank_bias=0.5).astype(np.float32)
    y[1, 2:5] = y[1, 1]  # a class held over several frames: repeats merge
    lengths = np.array([7, 5, 0, 3], np.int32)
    logs = np.log(y.astype(np.float64) + EPS)
    sequences = [_collapse(np.argmax(logs[b, :n], axis=1), 3) for b, n in enumerate(lengths)]
    scores = np.array([[-logs[b, :n].max(axis=1).sum()] for b, n in enumerate(lengths)])
    yp, il, decoded, log_prob = _decode(y, lengths, greedy=True, merge_repeated=False)
    assert len(decoded) == 1 and K.dtype(decoded[0]) == "int64"
    check(decoded + [log_prob], {yp: y, il: lengths}, [_dense(sequences), scores.astype(np.float32)],
          rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("merge_repeated", [False, True])
def test_beam_search_with_a_wide_beam_is_exact_against_brute_force(merge_repeated):
    rng = np.random.default_rng(5 + merge_repeated)
    y = _softmax_batch(rng, (3, 5, 3))
    lengths = np.array([5, 4, 2], np.int32)
    top_paths = 3
    expected_paths, expected_scores = [], []
    for b, n in enumerate(lengths):
        probs = np_labelings(y[b], n)
        ranked = sorted(probs, key=probs.get, reverse=True)[:top_paths]
        shift = np.log(y[b, :n] + EPS).max(axis=1).sum()  # TF subtracts each frame's max
        expected_paths.append([_merge(p) if merge_repeated else p for p in ranked])
        expected_scores.append([np.log(probs[p]) - shift for p in ranked])
    # 2 labels, 5 frames: 63 prefixes at most, so a beam of 64 never prunes
    yp, il, decoded, log_prob = _decode(y, lengths, greedy=False, beam_width=64, top_paths=top_paths,
                                        merge_repeated=merge_repeated)
    assert len(decoded) == top_paths
    expected = [_dense([paths[k] for paths in expected_paths]) for k in range(top_paths)]
    check(decoded + [log_prob], {yp: y, il: lengths}, expected + [np.array(expected_scores)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("beam_width,top_paths,classes", [(1, 1, 4), (2, 2, 3), (3, 2, 4), (4, 3, 5)])
def test_narrow_beam_search_matches_tensorflow_algorithm(beam_width, top_paths, classes):
    rng = np.random.default_rng(beam_width * 7 + classes)
    y = _softmax_batch(rng, (3, 6, classes)).astype(np.float32)
    y[0, 1:4, 0] += 0.6  # a repeated label, so merging and the blank-ending rule matter
    y[0] /= y[0].sum(-1, keepdims=True)
    lengths = np.array([6, 6, 4], np.int32)
    paths, scores = zip(*[np_tf_beam_search(y[b], n, beam_width, top_paths) for b, n in enumerate(lengths)])
    yp, il, decoded, log_prob = _decode(y, lengths, greedy=False, beam_width=beam_width, top_paths=top_paths)
    expected = [_dense([p[k] for p in paths]) for k in range(top_paths)]
    check(decoded + [log_prob], {yp: y, il: lengths}, expected + [np.array(scores, np.float32)],
          rtol=1e-4, atol=1e-4)


def test_beam_search_with_fewer_prefixes_than_paths_pads_with_minus_inf():
    # a zero-length sequence has only the empty prefix (TensorFlow fails at run time here)
    y = _softmax_batch(np.random.default_rng(2), (2, 3, 3)).astype(np.float32)
    lengths = np.array([3, 0], np.int32)
    yp, il, decoded, log_prob = _decode(y, lengths, greedy=False, beam_width=4, top_paths=2)
    fn = K.function([yp, il], decoded + [log_prob])
    first, second, scores = fn([y, lengths])
    assert scores[1, 0] == 0 and np.isneginf(scores[1, 1])
    assert np.all(first[1] == -1) and np.all(second[1] == -1)


def test_ctc_decode_argument_errors():
    yp = K.placeholder((None, None, 3))
    il = K.placeholder((None,), dtype="int32")
    with pytest.raises(ValueError, match="K.ctc_decode: top_paths"):
        K.ctc_decode(yp, il, greedy=False, beam_width=2, top_paths=3)
    with pytest.raises(ValueError, match="K.ctc_decode: beam_width"):
        K.ctc_decode(yp, il, greedy=False, beam_width=0)
    with pytest.raises(ValueError, match="K.ctc_decode: input_length"):
        K.ctc_decode(yp, K.placeholder((None, 1), dtype="int32"))


def test_ctc_label_dense_to_sparse_matches_numpy():
    labels = np.array([[3, 1, 4, 1], [5, 9, 2, 6], [5, 3, 5, 8]], np.int32)
    lengths = np.array([2, 4, 0], np.int32)
    lp = K.placeholder((None, 4), dtype="int32")
    ln = K.placeholder((None,), dtype="int32")
    sparse = K.ctc_label_dense_to_sparse(lp, ln)
    assert K.is_sparse(sparse) and K.int_shape(sparse) == (None, 4)
    rows, cols = np.nonzero(np.arange(4)[None, :] < lengths[:, None])
    dense = np.zeros_like(labels)
    dense[rows, cols] = labels[rows, cols]
    check([sparse.indices, sparse.values, sparse.dense_shape, K.to_dense(sparse)], {lp: labels, ln: lengths},
          [np.stack([rows, cols], 1), labels[rows, cols], np.array(labels.shape), dense])


# -- export ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [17, 18, 21])
def test_exported_training_step_runs_in_fresh_sessions(opset):
    rng = np.random.default_rng(opset)
    batch, time, classes = 2, 5, 4
    features = rng.standard_normal((batch, time, 3)).astype(np.float32)
    labels = np.array([[0, 1], [2, 2]], np.int32)
    in_len, lab_len = np.array([[5], [5]], np.int32), np.array([[2], [2]], np.int32)
    kernel = K.variable(rng.standard_normal((3, classes)) * 0.5, name="kernel")
    x = K.placeholder((None, time, 3), name="features")
    lt, _, il, ll = _placeholders(features, labels)
    logits = K.dot(x, kernel)
    e = K.exp(logits - K.max(logits, axis=-1, keepdims=True))
    y_pred = e / K.sum(e, axis=-1, keepdims=True)
    loss = K.mean(K.ctc_batch_cost(lt, y_pred, il, ll))
    step = K.update_sub(kernel, 0.1 * K.gradients(loss, [kernel])[0])
    before = K.get_value(kernel)
    fn = K.function([x, lt, il, ll], [loss], updates=[step])
    feeds = [features, labels, in_len, lab_len]
    model = fn.to_onnx(training=True, opset=opset)
    expected_loss = fn(feeds)[0]
    expected_kernel = K.get_value(kernel)

    onnx.checker.check_model(model, full_check=True)
    custom = [n for n in model.graph.node if n.domain == CUSTOM_DOMAIN]
    assert sorted(n.op_type for n in custom) == ["CTCLoss", "CTCLossGrad"]
    assert {(f.domain, f.name) for f in model.functions} == {(CUSTOM_DOMAIN, "CTCLoss"),
                                                            (CUSTOM_DOMAIN, "CTCLossGrad")}
    names = [i.name for i in model.graph.input]
    inputs = dict(zip(names, feeds + [before]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for results in (session.run(None, inputs), ReferenceEvaluator(model).run(None, inputs)):
        np.testing.assert_allclose(results[0], expected_loss, rtol=1e-5)
        np.testing.assert_allclose(results[1], expected_kernel, rtol=1e-5, atol=1e-6)
    np_loss, _ = np_ctc(_np_softmax(features @ before), labels, in_len[:, 0], lab_len[:, 0])
    np.testing.assert_allclose(expected_loss, np_loss.mean(), rtol=1e-5)


def _np_softmax(logits):
    return np.exp(_log_softmax(logits.astype(np.float64)))


@pytest.mark.parametrize("labels,in_len", [([[0, 1], [1, 1]], [4, 3]), ([[1, 0], [0, 0]], [4, 4])])
def test_ctc_second_derivative_finite_differences(labels, in_len):
    # the gradient of a per-sample weighted loss, differentiated again with respect to the
    # predictions and the weights (the Hessian-vector product function and the cotangent path)
    rng = np.random.default_rng(len(labels))
    y = _softmax_batch(rng, (2, 4, 3)) + 0.1
    weights = rng.uniform(0.5, 1.5, size=(2, 1))
    in_len = np.array(in_len)[:, None]

    def build(yp, wp):
        loss = K.ctc_batch_cost(K.constant(labels, dtype="int32"), yp, K.constant(in_len, dtype="int32"),
                                K.constant([[2], [2]], dtype="int32"))
        return K.gradients(K.sum(loss * wp), [yp])[0]

    check_grad(build, [y, weights], eps=1e-6, rtol=1e-5, atol=1e-6)
    # and the second-order function runs alike on onnx.reference
    yp, wp = K.placeholder(y.shape, dtype="float64"), K.placeholder(weights.shape, dtype="float64")
    hvp = K.gradients(K.sum(build(yp, wp) * K.constant(rng.standard_normal(y.shape), dtype="float64")), [yp, wp])
    evaluate(hvp, {yp: y, wp: weights}, rtol=1e-9, atol=1e-9)


def test_third_derivative_of_ctc_is_a_clear_error():
    yp = K.placeholder((1, 3, 3), dtype="float64")
    loss = K.sum(K.ctc_batch_cost(K.constant([[0]], dtype="int32"), yp, K.constant([[3]], dtype="int32"),
                                  K.constant([[1]], dtype="int32")))
    second = K.sum(K.gradients(K.sum(K.gradients(loss, [yp])[0] ** 2), [yp])[0] ** 2)
    with pytest.raises(NotImplementedError, match="third-order derivatives of the CTC loss"):
        K.gradients(second, [yp])
