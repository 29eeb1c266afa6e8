"""Collapse signals of the second-stage classifier, computed on each training batch.

A model that is collapsing onto one class shows it in the sampled RoIs long before
evaluation: foreground accuracy stalls, the foreground RoIs are called background,
or the predicted-class histogram piles up on one class while the target histogram
does not. These functions read the `class_outputs` [B, R, C] logits and
`class_targets` [B, R] (0 = background) that Model Garden's Mask R-CNN returns in
training, so the task can log them as TensorBoard scalars and histograms at no
extra model cost.

Ratios over foreground RoIs are 0 when a batch has none; average them over steps
weighted by `num_foreground` (e.g. `tf_keras.metrics.Mean` with `sample_weight`).
"""

from __future__ import annotations

import tensorflow as tf


def _foreground(class_outputs, class_targets):
    """One-hot predicted and target classes [N, C] and a foreground weight [N, 1].

    Everything stays dense with static shapes (no boolean_mask, no bincount), so the
    signals compile under XLA inside the train step, as on Cloud TPU.
    """
    num_classes = class_outputs.shape[-1]
    logits = tf.reshape(class_outputs, [-1, num_classes])
    targets = tf.reshape(tf.cast(class_targets, tf.int32), [-1])
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    is_foreground = tf.cast(targets > 0, tf.float32)[:, tf.newaxis]
    return (
        tf.one_hot(predicted, num_classes, dtype=tf.float32),
        tf.one_hot(targets, num_classes, dtype=tf.float32),
        is_foreground,
    )


def foreground_accuracy(class_outputs, class_targets) -> tf.Tensor:
    """Share of foreground RoIs whose arg-max class is their target class."""
    predicted, targets, foreground = _foreground(class_outputs, class_targets)
    correct = tf.reduce_sum(predicted * targets * foreground)
    return tf.math.divide_no_nan(correct, tf.reduce_sum(foreground))


def foreground_predicted_as_background(class_outputs, class_targets) -> tf.Tensor:
    """Share of foreground RoIs whose arg-max class is background (0)."""
    predicted, _, foreground = _foreground(class_outputs, class_targets)
    missed = tf.reduce_sum(predicted[:, :1] * foreground)
    return tf.math.divide_no_nan(missed, tf.reduce_sum(foreground))


def predicted_class_histogram(class_outputs, class_targets) -> tf.Tensor:
    """Counts of arg-max classes over foreground RoIs, int32 [C] (index 0: background)."""
    predicted, _, foreground = _foreground(class_outputs, class_targets)
    return tf.cast(tf.reduce_sum(predicted * foreground, axis=0), tf.int32)


def target_class_histogram(class_outputs, class_targets) -> tf.Tensor:
    """Counts of target classes over foreground RoIs, int32 [C]: what the histogram should look like."""
    _, targets, foreground = _foreground(class_outputs, class_targets)
    return tf.cast(tf.reduce_sum(targets * foreground, axis=0), tf.int32)


def collapse_signals(class_outputs, class_targets) -> dict:
    """All signals of one batch.

    Returns a dict of tensors: `foreground_accuracy`, `foreground_as_background`,
    `top_class_share` (share of the foreground RoIs predicted as some class that
    go to the single most predicted class: near 1 with several target classes in
    the batch is the collapse), `num_foreground` (float32, the weight for averaging),
    `predicted_class_histogram` and `target_class_histogram` (int32 [C]).
    """
    predicted_hist = predicted_class_histogram(class_outputs, class_targets)
    foreground_predictions = predicted_hist[1:]
    top_share = tf.math.divide_no_nan(
        tf.cast(tf.reduce_max(foreground_predictions), tf.float32),
        tf.cast(tf.reduce_sum(foreground_predictions), tf.float32),
    )
    return {
        "foreground_accuracy": foreground_accuracy(class_outputs, class_targets),
        "foreground_as_background": foreground_predicted_as_background(class_outputs, class_targets),
        "top_class_share": top_share,
        "num_foreground": tf.cast(tf.reduce_sum(predicted_hist), tf.float32),
        "predicted_class_histogram": predicted_hist,
        "target_class_histogram": target_class_histogram(class_outputs, class_targets),
    }
