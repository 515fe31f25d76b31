"""docs/ops.md stays what tools/ops_doc.py generates, and its "ONNX ops" column covers what the
lowering rules really emit on real models."""
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import kgraph.backend as K
from kgraph.lower.context import LoweringContext
from kgraph.ops.primitive import Primitive

from deploy_models import BUILDERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "ops_doc.py")


def _tool():
    spec = importlib.util.spec_from_file_location("ops_doc", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_ops_md_is_current():
    result = subprocess.run([sys.executable, TOOL, "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"docs/ops.md is stale: run `python tools/ops_doc.py`\n{result.stderr}"


def test_check_fails_on_a_stale_file_and_writes_nothing(tmp_path):
    out = tmp_path / "ops.md"
    written = subprocess.run([sys.executable, TOOL, "--output", out], capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    assert oct(os.stat(out).st_mode & 0o777) == "0o644"
    text = out.read_text()
    assert text.count("\n| `") == len(Primitive.registry)
    out.write_text(text.replace("| `exp` | `Exp` |", "| `exp` | `Log` |"))
    stale = subprocess.run([sys.executable, TOOL, "--check", "--output", out], capture_output=True, text=True)
    assert stale.returncode == 1 and "run python tools/ops_doc.py" in stale.stderr
    assert "| `exp` | `Log` |" in out.read_text() and os.listdir(tmp_path) == ["ops.md"]


def _documented_ops():
    rows = {}
    for line in _tool().render().splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("|` ")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return rows


def _graphs(dropout=True):
    """Small functions whose lowering reaches many primitives, gradients included."""
    fns = []
    for seed, build in enumerate(BUILDERS.values()):
        fn, _ = build(np.random.default_rng(seed))
        fns.append((fn, False))
    x = K.placeholder((2, 6, 6, 3))
    labels = K.placeholder((2, 2), dtype="int32")
    k = K.variable(np.random.default_rng(5).standard_normal((3, 3, 3, 4)) * 0.3)
    h = K.pool2d(K.relu(K.conv2d(x, k, padding="same")), (2, 2), strides=(2, 2))
    if dropout:  # kgraph's random draws need opset 18 (docs/ops.md says so; checked below)
        h = K.dropout(h, 0.5, seed=1)
    h = K.conv2d_transpose(h, K.variable(np.ones((2, 2, 2, 4), "float32")), (2, 6, 6, 2), strides=(2, 2))
    logits = K.reshape(h, (2, 6, 12))
    loss = K.mean(K.ctc_batch_cost(labels, K.softmax(logits), K.constant([[6], [6]], "int32"),
                                   K.constant([[2], [1]], "int32")))
    grads = K.gradients(loss, [k])
    fns.append((K.function([x, labels], [loss] + grads, updates=[K.update_sub(k, 0.1 * grads[0])]), True))
    # a spread of families: scans, layout, indexing, reductions, nn, their gradients
    v = K.variable(np.random.default_rng(6).uniform(0.5, 1.5, (2, 3, 4)).astype("float32"))
    ids = K.placeholder((2,), dtype="int32")
    parts = [K.cumprod(v, axis=1), K.tile(v, (1, 2, 1))[:, :3], K.reverse(v, axes=1),
             K.resize_images(K.permute_dimensions(v, (0, 2, 1))[..., None], 2, 2, "channels_last")[:, :4, :3, 0],
             K.permute_dimensions(K.pool2d(v[..., None], (2, 2), pool_mode="avg", padding="same")[..., 0], (0, 1, 2))]
    total = sum(K.sum(K.square(p)) for p in parts) + K.sum(K.gather(K.reshape(v, (2, 12)), ids)) + \
        K.sum(K.elu(v) * K.softsign(v) + K.hard_sigmoid(v)) + K.sum(K.categorical_crossentropy(K.softmax(v), v, from_logits=True)) + K.prod(v) + K.min(v)
    total = total + K.sum(K.concatenate([K.sqrt(v), K.pow(v, 2.5), K.maximum(v, 1.0), K.sigmoid(v)])) + \
        K.sum(K.softplus(v) * K.sin(v) + K.cos(v) + K.relu(v, alpha=0.1))
    extras = [K.argmax(v), K.argmin(v), K.one_hot(ids, 5), K.in_top_k(K.reshape(v, (2, 12)), ids, 3),
              K.round(v), K.sign(v), K.batch_flatten(v), K.arange(3), K.max(v, axis=1)]
    for greedy in (True, False):
        decoded, log_prob = K.ctc_decode(K.softmax(v), K.constant([3, 2], "int32"), greedy=greedy, beam_width=3)
        extras += decoded + [log_prob]
    if dropout:
        extras += [K.random_normal((2, 3), seed=2), K.random_uniform((2,), seed=3),
                   K.truncated_normal((3,), seed=4), K.random_binomial((2,), 0.5, seed=5)]
    fns.append((K.function([ids], [total] + K.gradients(total, [v]) + extras), False))
    return fns


@pytest.mark.parametrize("opset", [17, 18])
def test_lowering_emits_only_documented_ops(opset, monkeypatch):
    documented = _documented_ops()
    stack, emitted = [], {}
    for prim in list(Primitive.registry.values()):
        rule = prim.lower_rule

        def traced(ctx, node, *args, _rule=rule, _name=prim.name):
            stack.append(_name)
            try:
                return _rule(ctx, node, *args)
            finally:
                stack.pop()
        monkeypatch.setattr(prim, "lower_rule", traced)
    real_op = LoweringContext.op

    def recording_op(self, op_type, *inputs, domain="", **kwargs):
        if stack:  # the innermost rule running is the one that emits (Loop bodies nest rules)
            emitted.setdefault(stack[-1], set()).add(f"{domain}.{op_type}" if domain else op_type)
        return real_op(self, op_type, *inputs, domain=domain, **kwargs)
    monkeypatch.setattr(LoweringContext, "op", recording_op)
    for fn, training in _graphs(dropout=opset >= 18):
        fn.to_onnx(opset=opset, training=training)
    assert {"conv", "conv_transpose", "ctc_loss", "ctc_loss_grad", "loop", "cumprod", "resize"} <= set(emitted)
    assert len(emitted) >= 75, sorted(emitted)  # of 114 primitives today
    undocumented = {p: sorted(ops - documented[p]) for p, ops in emitted.items() if ops - documented[p]}
    assert not undocumented, f"docs/ops.md misses ops these rules emitted: {undocumented}"


def test_documented_opset_ranges_hold_for_random_draws():
    rows = {line.split(" | ")[0].strip("|` "): line.split(" | ")[3]
            for line in _tool().render().splitlines() if line.startswith("| `")}
    assert rows["dropout_mask"] == "18–21" and rows["exp"] == "17–21"
    x = K.placeholder((2, 3))
    f = K.function([x], [K.dropout(x, 0.5, seed=1)])
    with pytest.raises(NotImplementedError, match="opset 17"):
        f.to_onnx(opset=17)
    assert f.to_onnx(opset=18).opset_import[0].version == 18
