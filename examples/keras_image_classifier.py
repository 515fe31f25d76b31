"""A Keras 2.3.1 image classifier trained through kgraph, saved as .h5, converted to ONNX and run
on onnxruntime alone.

    pip install ".[keras]"
    python examples/keras_image_classifier.py --out keras-image --epochs 4

The data is built in: 12x12 grey images of three kinds of stripes (horizontal, vertical,
diagonal) at random phases, under heavy noise.  The script trains a small CNN with plain Keras
code (kgraph is only the backend), saves it with ``model.save``, converts the ``.h5`` file with
``kgraph.keras.convert`` (what ``kgraph convert`` does), exports the training step too, and
runs the converted file in a fresh onnxruntime session on the held-out images.
"""
import argparse
import os
import sys

# Keras picks its backend once, when it is first imported, from KERAS_BACKEND or keras.json
os.environ.setdefault("KERAS_BACKEND", "kgraph.backend")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import keras  # noqa: E402
from keras import layers, models  # noqa: E402

import kgraph  # noqa: E402
from kgraph.keras.convert import convert  # noqa: E402

SIZE, CLASSES = 12, ("horizontal", "vertical", "diagonal")


def stripes(n, rng):
    """``n`` noisy images of random stripe kinds: images (n, 12, 12, 1) and labels (n,)."""
    labels = rng.integers(0, len(CLASSES), n)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    along = np.stack([rows, cols, rows + cols])[labels]  # the coordinate each kind varies along
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    images = np.sin(along * (2 * np.pi / 4) + phase) + rng.normal(0, 0.8, (n, SIZE, SIZE))
    return images[..., None].astype("float32"), labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="keras-image", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "kgraph.backend":
        sys.exit(f"Keras runs on {keras.backend.backend()!r}; run with KERAS_BACKEND=kgraph.backend")
    os.makedirs(args.out, exist_ok=True)
    h5_path, onnx_path, step_path = (os.path.join(args.out, name) for name in
                                     ("classifier.h5", "classifier.onnx", "classifier_train_step.onnx"))
    for path in (h5_path, onnx_path, step_path):  # fail before training, not after
        if os.path.exists(path) and not args.force:
            sys.exit(f"{path} already exists (use --force to overwrite it)")

    rng = np.random.default_rng(0)
    np.random.seed(0)  # Keras's initializers and shuffling draw from numpy's global generator
    x_train, y_train = stripes(1200, rng)
    x_test, y_test = stripes(300, rng)

    model = models.Sequential([
        layers.Conv2D(8, 3, activation="relu", input_shape=(SIZE, SIZE, 1)),
        layers.MaxPooling2D(2),
        layers.Conv2D(8, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(len(CLASSES), activation="softmax")], name="stripes_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=2)
    keras_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"held-out accuracy (Keras on kgraph): {keras_accuracy:.3f}")

    model.save(h5_path)
    convert(h5_path, onnx_path, force=args.force)  # a fresh load of the file, as `kgraph convert` does
    kgraph.export_keras(model, step_path, training=True)
    print(f"wrote {h5_path}, {onnx_path} and {step_path}")

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    probabilities = session.run(None, {name: x_test})[0]
    onnx_accuracy = float(np.mean(probabilities.argmax(1) == y_test))
    print(f"held-out accuracy ({onnx_path} on onnxruntime): {onnx_accuracy:.3f}")
    agreement = np.abs(probabilities - model.predict(x_test)).max()
    print(f"largest difference from model.predict: {agreement:.2e}")


if __name__ == "__main__":
    main()
