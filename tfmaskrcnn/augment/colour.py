"""Photometric augmentation: ops that change the image's pixel values only.

Brightness, contrast, saturation, hue and grayscale are affine in the pixel value and
are applied together as one 3x3 colour matrix (`colour_matrix`) in one pass over the
image; Gaussian blur and additive Gaussian noise follow. Boxes and masks are never
touched, so these ops need no instance bookkeeping. `augment.augment` calls
`random_colour_float` on its float image; `random_colour` is the stand-alone op.

Randomness comes from the per-example seed through `augment_draws`, so the result is
a pure function of the image, the seed and the parameters.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfmaskrcnn.augment.draws import (
    OP_BLUR,
    OP_BRIGHTNESS,
    OP_CONTRAST,
    OP_GRAYSCALE,
    OP_HUE,
    OP_NOISE,
    OP_SATURATION,
    Draws,
    draw_many,
    happens,
    op_seed,
    uniform,
)
from tfmaskrcnn.augment.params import AugmentationParams


def cast_like(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Float values back to `like`'s dtype: clipped to [0, 255] and rounded for integers.

    Float values are only cast: a bilinear warp cannot leave the input's range, and the
    colour ops clip themselves (`random_colour`) or leave it to `augment`'s final cast.
    """
    if like.dtype.is_integer:
        return tf.cast(tf.round(tf.clip_by_value(values, 0.0, 255.0)), like.dtype)
    return tf.cast(values, like.dtype)


def clip_cast_like(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Float values clipped to [0, 255] (whatever `like`'s dtype), then `cast_like`."""
    return cast_like(values if like.dtype.is_integer else tf.clip_by_value(values, 0.0, 255.0), like)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """Separable Gaussian blur of a float [H, W, 3] image (any value range); edges mirrored."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    kv = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    kh = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    out = tf.nn.depthwise_conv2d(padded, kv, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kh, [1, 1, 1, 1], "VALID")
    return out[0]


# RGB -> YIQ (NTSC); hue turns are rotations of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_LUMA = _RGB_TO_YIQ[0]
_EYE = np.eye(3, dtype=np.float32)
_GREY = np.ones([3, 1], np.float32) * _LUMA[None]  # every channel becomes the luma
# Hue rotation by angle a in YIQ: YIQ_TO_RGB @ (fixed + cos a * cos_part + sin a * sin_part) @ RGB_TO_YIQ.
_HUE_FIXED = (_YIQ_TO_RGB @ np.diag([1.0, 0.0, 0.0]).astype(np.float32) @ _RGB_TO_YIQ).astype(np.float32)
_HUE_COS = (_YIQ_TO_RGB @ np.diag([0.0, 1.0, 1.0]).astype(np.float32) @ _RGB_TO_YIQ).astype(np.float32)
_HUE_SIN = (_YIQ_TO_RGB @ np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], np.float32) @ _RGB_TO_YIQ).astype(np.float32)


def colour_matrix(image: tf.Tensor, brightness=0.0, contrast=1.0, saturation=1.0, hue_turns=0.0, grayscale=False):
    """(matrix [3, 3], offset [3]) with which `pixel @ matrix + offset` applies, in order:

    brightness (add `brightness`, in 0-255 units), contrast (scale about the per-channel
    mean by `contrast`), saturation (blend with the luma grey by `saturation`, as
    PIL / torchvision do), hue (rotate the YIQ chroma plane by `hue_turns` of a full turn)
    and, if `grayscale`, replace every channel by the luma. All of these are affine in
    the pixel value, so they compose into one 3x3 matrix and one pass over the image.
    """
    f = lambda v: tf.cast(v, tf.float32)  # noqa: E731
    # Column-vector matrices (new = M @ old), transposed once at the end. Built from
    # precomputed numpy bases so the graph has a few scalar ops, not dozens.
    saturate = _GREY + f(saturation) * (_EYE - _GREY)
    angle = f(hue_turns) * (2.0 * math.pi)
    hue = _HUE_FIXED + tf.cos(angle) * _HUE_COS + tf.sin(angle) * _HUE_SIN
    chroma = tf.where(tf.cast(grayscale, tf.bool), _GREY, _EYE) @ hue @ saturate
    # brightness then contrast: c * (x + b) + (1 - c) * (mean + b) = c * x + b + (1 - c) * mean
    # The mean is a pass over the image; it is needed only when the contrast changes.
    mean = tf.cond(
        tf.not_equal(f(contrast), 1.0),
        lambda: tf.reduce_mean(tf.reshape(tf.cast(image, tf.float32), [-1, 3]), axis=0),
        lambda: tf.zeros([3]),
    )
    offset = tf.linalg.matvec(chroma, f(brightness) + (1.0 - f(contrast)) * mean)
    return tf.transpose(chroma) * f(contrast), offset


def random_colour(image: tf.Tensor, seed: tf.Tensor, p: AugmentationParams) -> tf.Tensor:
    """Photometric ops on the image only; returns the same dtype and range.

    Brightness, contrast, saturation, hue and grayscale are drawn independently and
    applied together as one affine colour map (`colour_matrix`); values are clipped to
    [0, 255] once, after all of them, rather than after each.
    """
    x = random_colour_float(tf.cast(image, tf.float32), Draws(tf.cast(seed, tf.int64)), p)
    return clip_cast_like(x, image)


def random_colour_float(image: tf.Tensor, seed: tf.Tensor, p: AugmentationParams) -> tf.Tensor:
    """`random_colour` on a float32 [H, W, 3] image in [0, 255], without the final clip."""
    shape = tf.shape(image)
    x = tf.reshape(image, [-1, 3])

    brightness, contrast, saturation, hue = tf.unstack(
        draw_many(
            seed,
            [OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE],
            [p.brightness_prob, p.contrast_prob, p.saturation_prob, p.hue_prob],
            [-p.brightness_max_delta, p.contrast_lower, p.saturation_lower, -p.hue_max_delta],
            [p.brightness_max_delta, p.contrast_upper, p.saturation_upper, p.hue_max_delta],
            [0.0, 1.0, 1.0, 0.0],
        )
    )
    grayscale = happens(seed, OP_GRAYSCALE, p.grayscale_prob) if p.grayscale_prob > 0 else False
    if max(p.brightness_prob, p.contrast_prob, p.saturation_prob, p.hue_prob, p.grayscale_prob) > 0:
        matrix, offset = colour_matrix(x, brightness * 255.0, contrast, saturation, hue, grayscale)
        x = tf.matmul(x, matrix) + offset[None]
    x = tf.reshape(x, shape)

    def when(op, prob, fn, x):
        return tf.cond(happens(seed, op, prob), lambda: fn(x), lambda: x)

    if p.blur_prob > 0 and p.blur_sigma_max > 0:
        radius = max(1, int(math.ceil(3 * p.blur_sigma_max)))
        sigma = uniform(seed, OP_BLUR, 1, 0.1, p.blur_sigma_max)
        # Mirrored padding needs the image to be larger than the kernel radius.
        big_enough = tf.reduce_all(tf.shape(x)[:2] > radius)
        x = when(
            OP_BLUR, p.blur_prob, lambda x: tf.cond(big_enough, lambda: gaussian_blur(x, sigma, radius), lambda: x), x
        )
    if p.noise_prob > 0 and p.noise_std_max > 0:
        std = uniform(seed, OP_NOISE, 1, 0.0, p.noise_std_max) * 255.0

        def add_noise(x):
            noise_seed = op_seed(op_seed(op_seed(seed, OP_NOISE), 7), 1)
            return x + std * tf.random.stateless_normal(tf.shape(x), noise_seed)

        x = when(OP_NOISE, p.noise_prob, add_noise, x)
    return x
