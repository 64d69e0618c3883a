"""tf.data pipelines: batched augmentation for training, plain resizing for validation.

Augmentation lives here and never in the model, so the exported graph holds no random
layers (in Keras 3 those switch the BatchNorm and Dropout after them into training mode,
and tf2onnx cannot convert them).

Every geometric change of a training image (zoom, aspect, translation, small rotation,
horizontal flip and the resize to the epoch's image size) is one projective transform per
image, applied to the whole batch in a single op. Colour jitter is three vector ops. On
two cores this costs a few percent of a training step. Randomness is stateless and seeded
by (seed, epoch, batch), so a resumed run sees the same images as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    min_area: float = 0.30  # smallest crop, as a fraction of the image's area
    max_aspect: float = 4 / 3
    max_rotation_deg: float = 10.0
    hflip: bool = True
    brightness: float = 0.15  # +- fraction of full scale
    contrast: float = 0.25  # factor in [1-c, 1+c]
    saturation: float = 0.30
    mixup: float = 0.0  # Beta(alpha, alpha); 0 turns it off
    cutmix: float = 0.0


def _geometry(batch: int, size: int, src: int, seed, cfg: AugmentConfig) -> tf.Tensor:
    """(batch, 8) transforms mapping output pixels to input pixels."""
    u = tf.random.stateless_uniform((batch, 6), seed=seed)
    log_ratio = (u[:, 0] * 2 - 1) * math.log(cfg.max_aspect)
    area = cfg.min_area + (1 - cfg.min_area) * u[:, 1]
    ratio = tf.exp(log_ratio)
    cw = tf.minimum(src * tf.sqrt(area * ratio), float(src))
    ch = tf.minimum(src * tf.sqrt(area / ratio), float(src))
    cx = cw / 2 + (src - cw) * u[:, 2]
    cy = ch / 2 + (src - ch) * u[:, 3]
    theta = (u[:, 4] * 2 - 1) * (cfg.max_rotation_deg * math.pi / 180)
    flip = tf.where(u[:, 5] < 0.5, -1.0, 1.0) if cfg.hflip else tf.ones((batch,))
    kx, ky = cw / size, ch / size
    ox, oy = 0.5 * kx - cw / 2, 0.5 * ky - ch / 2
    cos, sin = tf.cos(theta), tf.sin(theta)
    a0 = cos * flip * kx
    a1 = -sin * ky
    a2 = cos * flip * ox - sin * oy + cx - 0.5
    b0 = sin * flip * kx
    b1 = cos * ky
    b2 = sin * flip * ox + cos * oy + cy - 0.5
    zeros = tf.zeros((batch,))
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment(images: tf.Tensor, size: int, seed, cfg: AugmentConfig) -> tf.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, size, size, 3) in 0..255, augmented."""
    batch = tf.shape(images)[0]
    src = images.shape[1]
    x = tf.cast(images, tf.float32)
    transforms = _geometry(batch, size, src, seed, cfg)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.constant([size, size]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    c = tf.random.stateless_uniform((batch, 1, 1, 3), seed=seed + tf.constant([0, 1], tf.int64))
    bright = (c[..., 0:1] * 2 - 1) * cfg.brightness * 255.0
    contrast = 1 + (c[..., 1:2] * 2 - 1) * cfg.contrast
    saturation = 1 + (c[..., 2:3] * 2 - 1) * cfg.saturation
    gray = tf.reduce_mean(x, axis=-1, keepdims=True)
    x = gray + (x - gray) * saturation
    mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean + bright
    return tf.clip_by_value(x, 0.0, 255.0)


def _mix(x: tf.Tensor, y: tf.Tensor, seed, cfg: AugmentConfig):
    """Mixup or cutmix on a batch with one-hot labels (whichever alpha is set; cutmix wins)."""
    batch = tf.shape(x)[0]
    alpha = cfg.cutmix or cfg.mixup
    g1 = tf.random.stateless_gamma((1,), seed=seed + tf.constant([0, 2], tf.int64), alpha=alpha)
    g2 = tf.random.stateless_gamma((1,), seed=seed + tf.constant([0, 3], tf.int64), alpha=alpha)
    lam = (g1 / (g1 + g2))[0]
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(batch), seed=seed + tf.constant([0, 4], tf.int64))
    x2, y2 = tf.gather(x, perm), tf.gather(y, perm)
    if cfg.cutmix:
        size = tf.shape(x)[1]
        sizef = tf.cast(size, tf.float32)
        cut = tf.cast(sizef * tf.sqrt(1 - lam), tf.int32)
        pos = tf.random.stateless_uniform((2,), seed=seed + tf.constant([0, 5], tf.int64))
        cy = tf.cast(pos[0] * sizef, tf.int32)
        cx = tf.cast(pos[1] * sizef, tf.int32)
        y0, y1 = tf.maximum(cy - cut // 2, 0), tf.minimum(cy + cut // 2, size)
        x0, x1 = tf.maximum(cx - cut // 2, 0), tf.minimum(cx + cut // 2, size)
        rows = tf.range(size)[:, None]
        cols = tf.range(size)[None, :]
        box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        box = tf.cast(box, tf.float32)[None, :, :, None]
        x = x * (1 - box) + x2 * box
        lam = 1 - tf.reduce_sum(box) / (sizef * sizef)
    else:
        x = x * lam + x2 * (1 - lam)
    return x, y * lam + y2 * (1 - lam)


def _gather(images: np.ndarray):
    """A tf function that gathers a batch from a NumPy array without copying it into the graph."""
    def gather(idx: tf.Tensor) -> tf.Tensor:
        out = tf.numpy_function(lambda i: images[i],
                                [idx], tf.uint8, stateful=False)
        out.set_shape((None,) + images.shape[1:])
        return out
    return gather


def train_dataset(images: np.ndarray, labels: np.ndarray, indices: list[int], *, size: int,
                  batch: int, epoch: int, seed: int, num_classes: int,
                  cfg: AugmentConfig) -> tf.data.Dataset:
    """One epoch of augmented, shuffled batches (the last partial batch is dropped)."""
    shuffle = np.random.default_rng([seed, epoch]).permutation(len(indices))
    order = np.asarray(indices, np.int64)[shuffle]
    gather = _gather(images)
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]

    def make(step, idx):
        seed_t = tf.stack([tf.constant(seed, tf.int64),
                           tf.cast(epoch * 1_000_003, tf.int64) + step])
        x = augment(gather(idx), size, seed_t, cfg)
        y = tf.gather(tf.constant(onehot), idx)
        if cfg.mixup or cfg.cutmix:
            x, y = _mix(x, y, seed_t, cfg)
        return x, y

    ds = tf.data.Dataset.from_tensor_slices(order).batch(batch, drop_remainder=True)
    return ds.enumerate().map(make, num_parallel_calls=2, deterministic=True).prefetch(2)


def _resized(x: tf.Tensor, size: int) -> tf.Tensor:
    """A training batch as a teacher sees it: resized to size x size, as it is with 0."""
    return tf.image.resize(x, (size, size), method="bilinear") if size else x


def distilled(ds: tf.data.Dataset, teachers: list[tuple[object, int]],
              weight: float) -> tf.data.Dataset:
    """Targets that are `weight` of the mean of the teachers' probabilities on the very image
    the student sees (augmented, cut and mixed) and the rest the dataset's own labels
    (distillation from one teacher or an ensemble).

    `teachers` holds (model, size) pairs: with a size the teacher sees that image resized to
    size x size, so a teacher trained at 128 px gives its best targets while the student
    trains at 64; with 0 it sees the student's image."""
    def blend(x, y):
        probs = [tf.cast(teacher(_resized(x, size), training=False), tf.float32)
                 for teacher, size in teachers]
        return x, (1.0 - weight) * y + weight * (tf.add_n(probs) / len(probs))

    return ds.map(blend, num_parallel_calls=1, deterministic=True)


def eval_dataset(images: np.ndarray, labels: np.ndarray | None, indices: list[int], *,
                 size: int, batch: int = 128, num_classes: int = 0) -> tf.data.Dataset:
    """The images as they are, resized (antialiased bilinear) when `size` differs."""
    gather = _gather(images)
    onehot = (np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]
              if labels is not None else None)

    def make(idx):
        x = tf.cast(gather(idx), tf.float32)
        if size != images.shape[1]:
            x = tf.image.resize(x, (size, size), method="bilinear", antialias=True)
        if onehot is None:
            return x
        return x, tf.gather(tf.constant(onehot), idx)

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64)).batch(batch)
    return ds.map(make, num_parallel_calls=2).prefetch(2)
