"""The model zoo: pure builders of Keras Functional models, one per architecture name.

Every model takes float32 RGB images in 0..255 (NHWC) and ends in a softmax, so the
exported graph matches the runtime's contract with no preprocessing outside the model.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

Builder = Callable[[int, int | None], keras.Model]
ARCHS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        ARCHS[name] = fn
        return fn
    return wrap


def make_model(arch: str, num_classes: int, image_size: int | None = 150) -> keras.Model:
    """Build `arch` for `num_classes`. Fully convolutional archs accept any size (None)."""
    if arch not in ARCHS:
        raise KeyError(f"unknown arch {arch!r}; choose from {', '.join(sorted(ARCHS))}")
    return ARCHS[arch](num_classes, image_size)


def fixed_size(arch: str) -> bool:
    """Whether the arch flattens its feature map, so it only accepts its build size."""
    return arch.startswith("seed-")


def _inputs(image_size: int | None) -> keras.KerasTensor:
    return keras.Input(shape=(image_size, image_size, 3), name="image")


@register("seed-dense")
def seed_dense(num_classes: int, image_size: int | None = 150) -> keras.Model:
    """The study's dense baseline (about 50% there): Flatten, Dense 128, Dense 6."""
    inputs = _inputs(image_size or 150)
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="seed_dense")


@register("seed-cnn")
def seed_cnn(num_classes: int, image_size: int | None = 150) -> keras.Model:
    """The study's best CNN (about 75% there): Conv 32-64-128 with max-pooling, Dense 128."""
    inputs = _inputs(image_size or 150)
    x = layers.Rescaling(1 / 255.0)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def _conv_bn(x, filters: int, stride: int = 1, relu: bool = True, zero_gamma: bool = False):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5,
        gamma_initializer="zeros" if zero_gamma else "ones")(x)
    return layers.ReLU()(x) if relu else x


def _basic_block(x, filters: int, stride: int):
    """Two 3x3 convs with an identity (or avg-pool + 1x1, ResNet-D) shortcut.

    The last BatchNorm starts at zero, so each block begins as the identity: the net
    trains like a shallow one first, which matters on a short CPU schedule.
    """
    shortcut = x
    y = _conv_bn(x, filters, stride)
    y = _conv_bn(y, filters, relu=False, zero_gamma=True)
    if stride != 1 or x.shape[-1] != filters:
        if stride != 1:
            shortcut = layers.AveragePooling2D(stride, padding="same")(shortcut)
        shortcut = layers.Conv2D(filters, 1, use_bias=False,
                                 kernel_initializer="he_normal")(shortcut)
        shortcut = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _resnet(num_classes: int, image_size: int | None, widths: tuple[int, ...],
            depths: tuple[int, ...], name: str, dropout: float = 0.2) -> keras.Model:
    inputs = _inputs(image_size)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = _conv_bn(x, widths[0], stride=2)
    for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        for block in range(depth):
            x = _basic_block(x, width, 2 if (stage > 0 and block == 0) else 1)
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


@register("scenenet")
def scenenet(num_classes: int, image_size: int | None = None) -> keras.Model:
    """Our shipped net: a stride-2 stem and seven basic blocks (24-48-96-192), GAP, softmax.

    About 1.6M parameters; fully convolutional, so it trains at any size (progressive
    resizing) and is exported at the size that scored best on the validation split.
    """
    return _resnet(num_classes, image_size, (24, 48, 96, 192), (1, 2, 2, 2), "scenenet")


@register("scenenet-wide")
def scenenet_wide(num_classes: int, image_size: int | None = None) -> keras.Model:
    """scenenet with a third more channels in its first three stages (32-64-128-192).

    About 1.9M parameters (7.7 MB as ONNX, under the 8 MB budget); about 1.6x scenenet's
    multiply-adds (427 M against 272 M at 128 px) but about 1.3x its time in onnxruntime
    here, paid for by the speed scenenet has over the model it replaced.
    """
    return _resnet(num_classes, image_size, (32, 64, 128, 192), (1, 2, 2, 2), "scenenet_wide")


@register("tiny")
def tiny(num_classes: int, image_size: int | None = None) -> keras.Model:
    """A few-thousand-parameter residual net for tests and smoke runs."""
    return _resnet(num_classes, image_size, (8, 16), (1, 1), "tiny", dropout=0.0)
