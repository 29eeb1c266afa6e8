"""Seeded random draws shared by the augmentation ops (`augment`, `augment_colour`).

Every op draws its randomness with stateless ops from the per-example seed: one
`stateless_uniform` vector with a fixed slot per op for the scalar draws (`Draws`,
`uniform`, `happens`, `draw_many`), and `stateless_fold_in(seed, op_index)` for the
rest (`op_seed`). The output of an augmentation is thus a pure function of its inputs
and the seed. Each op has a stable index here, so adding an op never changes the
draws of the others.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Stable op indices for seed derivation: adding an op never changes the others' draws.
OP_HFLIP, OP_VFLIP, OP_ROT90 = 1, 2, 3
OP_SCALE, OP_ROTATE, OP_SHEAR, OP_TRANSLATE = 4, 5, 6, 7
OP_CUTOUT = 8
OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE = 9, 10, 11, 12
OP_GRAYSCALE, OP_BLUR, OP_NOISE = 13, 14, 15


class Draws:
    """The per-example seed plus one batch of uniform draws, 4 per op index.

    Every scalar draw an op needs (does it happen, its magnitude) is read from one
    `stateless_uniform` vector instead of a fold-in chain of its own: at small image
    sizes those few-element ops were a visible share of the augmentation time. Slots
    are fixed per (op index, salt), so adding an op never changes the others' draws.
    """

    SALTS = 4
    SLOTS = 16 * SALTS  # op indices 0..15

    def __init__(self, seed: tf.Tensor):
        self.seed = seed
        self.table = tf.random.stateless_uniform([self.SLOTS], seed)


def op_seed(seed, op_index: int) -> tf.Tensor:
    """The seed of op `op_index`, for draws that do not fit the shared table."""
    seed = seed.seed if isinstance(seed, Draws) else seed
    return tf.random.experimental.stateless_fold_in(seed, op_index)


def uniform(seed, op_index, salt, minval=0.0, maxval=1.0, shape=()):
    """Uniform draw(s) in [minval, maxval) for (op, salt): from the table when scalar and it has the slot."""
    if isinstance(seed, Draws) and salt < Draws.SALTS and shape == ():
        return minval + (maxval - minval) * seed.table[op_index * Draws.SALTS + salt]
    sub = tf.random.experimental.stateless_fold_in(op_seed(seed, op_index), salt)
    return tf.random.stateless_uniform(shape, sub, minval=minval, maxval=maxval)


def draw_many(seed, ops, probs, lows, highs, identities, salts=None) -> tf.Tensor:
    """For each op: a uniform draw in [low, high) if it happens (prob), else its identity value.

    The same draws as `happens` / `uniform(..., salt=1, ...)` per op, computed as a
    handful of vector ops (few-element ops cost as much as big ones at small sizes).
    """
    if not isinstance(seed, Draws):
        seed = Draws(seed)
    slots = np.array(ops) * Draws.SALTS
    happened = tf.gather(seed.table, slots) < np.array(probs, np.float32)
    lows, highs = np.array(lows, np.float32), np.array(highs, np.float32)
    salts = np.ones(len(ops), np.int64) if salts is None else np.array(salts)
    values = lows + (highs - lows) * tf.gather(seed.table, slots + salts)
    return tf.where(happened, values, np.array(identities, np.float32))


def happens(seed, op_index, prob: float) -> tf.Tensor:
    """Whether op `op_index` is applied to this example, with probability `prob`."""
    return uniform(seed, op_index, 0) < prob
