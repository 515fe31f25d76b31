"""keras_applications models (through keras.applications, weights=None) on kgraph: each builds at
the smallest input it allows, predicts, trains a step to a finite loss, and exports an ONNX file
whose onnxruntime output equals model.predict.  Small inputs and 3 classes keep the file fast:
the weights of the convolutional trunks stay full size (ResNet50 23M parameters)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import keras
from keras import applications, layers, models
from keras_applications import resnet_common

import kgraph

CLASSES = 3

# (model, smallest square input the model accepts with include_top=True and weights=None)
MODELS = [
    ("ResNet50", 32),      # resnet50.py: min_size 32
    ("MobileNetV2", 32),   # mobilenet_v2.py: min_size 32
    ("InceptionV3", 75),   # inception_v3.py: min_size 75
    ("DenseNet121", 32),   # densenet.py: min_size 32
    ("Xception", 71),      # xception.py: min_size 71
    ("VGG16", 32),         # vgg16.py: min_size 32
]


def _check_predict_train_export(model, size, path):
    rng = np.random.default_rng(size)
    x = rng.random((2, size, size, 3), dtype=np.float32)
    expected = model.predict(x)
    assert expected.shape == (2, CLASSES)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)  # the softmax top

    proto = onnx.load(kgraph.export_keras(model, path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {model.input_names[0]: x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)

    model.compile("sgd", "categorical_crossentropy")
    y = np.eye(CLASSES, dtype=np.float32)[[0, 1]]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss) and loss > 0
    # the step changed the weights: predict now differs from before
    assert not np.allclose(model.predict(x), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,size", MODELS, ids=[m for m, _ in MODELS])
def test_application_builds_predicts_trains_and_exports(name, size, tmp_path):
    model = getattr(applications, name)(weights=None, input_shape=(size, size, 3), classes=CLASSES)
    assert model.output_shape == (None, CLASSES)
    _check_predict_train_export(model, size, tmp_path / f"{name}.onnx")


def test_application_refuses_an_input_below_its_minimum():
    with pytest.raises(ValueError, match="75"):
        applications.InceptionV3(weights=None, input_shape=(74, 74, 3), classes=CLASSES)


def test_lambda_without_output_shape_infers_it_from_its_call():
    # keras/layers/core.py:670 infers the shape only on TensorFlow/CNTK; Keras would otherwise take
    # the input's shape, (None, 6, 2), and the Reshape below would refuse it
    inp = layers.Input((6, 2))
    out = layers.Lambda(lambda t: t[:, :4, 0] * 2.0)(inp)
    assert keras.backend.int_shape(out) == (None, 4)
    out = layers.Reshape((2, 2))(out)
    model = models.Model(inp, out)
    assert model.output_shape == (None, 2, 2)
    x = np.arange(24, dtype=np.float32).reshape(2, 6, 2)
    np.testing.assert_array_equal(model.predict(x), (x[:, :4, 0] * 2.0).reshape(2, 2, 2))
    two = layers.Lambda(lambda ts: [ts[0][:, :3], ts[1]])([inp, layers.Input((5,))])
    assert [keras.backend.int_shape(t) for t in two] == [(None, 3, 2), (None, 5)]


def test_resnext_block_with_its_reducing_lambda(tmp_path):
    # keras_applications/resnet_common.py:233: ResNeXt's grouped block sums a Lambda without
    # output_shape; one such stack (instead of ResNeXt50's 16 blocks) keeps the test small
    def stack_fn(x):
        return resnet_common.stack3(x, 64, 1, stride1=1, groups=32, name="conv2")

    model = resnet_common.ResNet(stack_fn, False, False, "tiny_resnext", weights=None,
                                 input_shape=(32, 32, 3), classes=CLASSES, backend=keras.backend,
                                 layers=keras.layers, models=keras.models, utils=keras.utils)
    assert model.get_layer("conv2_block1_2_reduce").output_shape == (None, 8, 8, 32, 2)
    _check_predict_train_export(model, 32, tmp_path / "resnext.onnx")

