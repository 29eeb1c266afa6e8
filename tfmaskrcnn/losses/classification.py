"""The class-weighted Fast R-CNN classification loss (softmax cross-entropy, sigmoid focal, or
logit-adjusted softmax cross-entropy).

`weighted_classification_loss` is the second-stage classification loss with per-class
weights, normalized so that weights change the *balance* between classes but not the
overall loss scale (Model Garden's `FastrcnnClassLoss` divides by the RoI count, so
weights there also rescale the loss and the effective learning rate). With all weights 1
and `weight_sum` normalization it equals Model Garden's loss. TensorFlow is imported by
the callers; this module stays importable without it.

`logit_adjusted` is the softmax cross-entropy of z + a, a the [C] adjustment of
`tfmaskrcnn.losses.logit_adjustment` (Balanced Softmax at τ = 1; background column unadjusted);
detections are scored from the raw logits z with the plain softmax.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tfmaskrcnn.losses.class_weights import check_class_weights

NORMALIZATIONS = ("weight_sum", "mean")
LOSS_TYPES = ("softmax", "sigmoid_focal", "logit_adjusted")


def _per_roi_loss(tf, logits, targets, num_classes, loss_type, focal_alpha, focal_gamma, adjustment=None):
    one_hot = tf.one_hot(targets, num_classes, dtype=tf.float32)
    if loss_type == "softmax":
        return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits)
    if loss_type == "logit_adjusted":
        return tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=logits + adjustment)
    # One-hot sigmoid focal loss (Lin et al. 2017), summed over the class columns.
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=one_hot, logits=logits)
    probs = tf.sigmoid(logits)
    p_true = one_hot * probs + (1.0 - one_hot) * (1.0 - probs)
    alpha = one_hot * focal_alpha + (1.0 - one_hot) * (1.0 - focal_alpha)
    modulator = tf.pow(1.0 - p_true, focal_gamma)
    return tf.reduce_sum(alpha * modulator * cross_entropy, axis=-1)


def weighted_classification_loss(
    class_outputs,
    class_targets,
    class_weights: Sequence[float],
    normalization: str = "weight_sum",
    loss_type: str = "softmax",
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    logit_adjustment: Optional[Sequence[float]] = None,
):
    """Class-weighted Fast R-CNN classification loss, a float32 scalar.

    Args:
      class_outputs: [B, R, C] logits (any float dtype; computed in float32 so it is
        safe under mixed precision).
      class_targets: [B, R] class ids (float or int), 0 = background.
      class_weights: C weights, index 0 background (from `compute_class_weights`).
      normalization: `weight_sum`: sum_i w[t_i] l_i / max(sum_i w[t_i], eps), a
        weighted mean whose scale does not depend on the weights; with all weights 1
        it is exactly Model Garden's `FastrcnnClassLoss`. `mean`: mean_i w[t_i] l_i,
        Model Garden's own weighted loss (weights also rescale the loss).
      loss_type: `softmax` cross entropy, or `sigmoid_focal`: one-hot sigmoid focal
        loss summed over the C columns of a RoI, then weighted by the RoI's target
        class and normalized like softmax (per RoI, not per positive anchor as in
        RetinaNet: the RoI sampler fixes the foreground share, so the count of RoIs
        is the stable denominator). `logit_adjusted`: softmax cross-entropy of the logits plus
        `logit_adjustment` (C numbers, background first; `tfmaskrcnn.losses.logit_adjustment`).
    """
    import tensorflow as tf

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    with tf.name_scope("weighted_fast_rcnn_class_loss"):
        logits = tf.cast(class_outputs, tf.float32)
        num_classes = logits.shape[-1]
        if num_classes is None:
            raise ValueError("class_outputs must have a static number of classes (last dimension)")
        check_class_weights(list(class_weights), num_classes)
        weights_table = tf.constant(np.asarray(class_weights, dtype=np.float32))
        targets = tf.cast(class_targets, tf.int32)
        adjustment = _adjustment(tf, loss_type, logit_adjustment, num_classes)
        per_roi = _per_roi_loss(tf, logits, targets, num_classes, loss_type, focal_alpha, focal_gamma, adjustment)
        roi_weights = tf.gather(weights_table, targets)
        weighted = roi_weights * per_roi
        if normalization == "mean":
            return tf.reduce_mean(weighted)
        return tf.reduce_sum(weighted) / tf.maximum(tf.reduce_sum(roi_weights), 1e-8)


def _adjustment(tf, loss_type, logit_adjustment, num_classes):
    if loss_type != "logit_adjusted":
        if logit_adjustment is not None:
            raise ValueError(f"logit_adjustment is for loss_type logit_adjusted, not {loss_type}")
        return None
    if logit_adjustment is None or len(logit_adjustment) != num_classes:
        raise ValueError(
            f"loss_type logit_adjusted needs {num_classes} logit adjustments (background first), got "
            f"{None if logit_adjustment is None else len(logit_adjustment)}"
        )
    return tf.constant(np.asarray(logit_adjustment, dtype=np.float32))


class WeightedFastrcnnClassLoss:
    """Drop-in for Model Garden's `FastrcnnClassLoss` with class weights built in.

    `__call__(class_outputs, class_targets, class_weights=None)` has the same
    arguments as Model Garden's; a `class_weights` passed there (e.g. the config's
    `losses.class_weights` forwarded by the stock task) replaces the ones given
    here, None keeps them.
    """

    def __init__(
        self,
        class_weights: Sequence[float],
        normalization: str = "weight_sum",
        loss_type: str = "softmax",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        logit_adjustment: Optional[Sequence[float]] = None,
    ):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
        self.class_weights = [float(w) for w in class_weights]
        check_class_weights(self.class_weights, len(self.class_weights))
        self.normalization = normalization
        self.loss_type = loss_type
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.logit_adjustment = None if logit_adjustment is None else [float(a) for a in logit_adjustment]
        if loss_type == "logit_adjusted" and self.logit_adjustment is None:
            raise ValueError("loss_type logit_adjusted needs logit_adjustment (tfmaskrcnn.losses.logit_adjustment)")

    def __call__(self, class_outputs, class_targets, class_weights=None):
        weights = self.class_weights if class_weights is None else list(class_weights)
        return weighted_classification_loss(
            class_outputs,
            class_targets,
            weights,
            normalization=self.normalization,
            loss_type=self.loss_type,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            logit_adjustment=self.logit_adjustment,
        )
