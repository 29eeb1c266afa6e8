"""Long-tail classification losses of the box head: Seesaw, EQLv2 and federated loss.

Layout of the inputs, as Model Garden's box head gives them: `class_outputs` [B, R, C] logits
with column 0 background and columns 1..K = C - 1 the classes; `class_targets` [B, R] ids,
0 = background. Every loss is computed in float32 (safe under mixed precision), summed over
RoIs and divided by the RoI count B * R, as mmdetection and detectron2 do.

- Seesaw (Wang et al., CVPR 2021; as mmdetection's `SeesawLoss`): the background is an
  objectness split. mmdetection's head has K class logits plus two objectness logits, of which
  only the difference matters; here column 0 is that one objectness logit, read as the
  background logit b (P(foreground) = σ(−b)), and columns 1..K are the class logits.
  Loss = BCE(−b, is_foreground) + [foreground RoIs] seesaw cross-entropy over the K class
  logits, so background RoIs train b alone and send no gradient into the class logits.
  A negative class j of a RoI of class i has its logit shifted by log S_ij, S_ij = M_ij * C_ij:
  mitigation M_ij = (N_j / N_i)^p when N_j < N_i (N: running counts of foreground RoI
  targets, this step's included, clamped at 1), compensation C_ij = (σ_j / σ_i)^q when
  σ_j > σ_i (σ: softmax of the detached class logits). The detection score is
  softmax(z_1..z_K)_c · σ(−b), mmdetection's (`tfmaskrcnn.losses.scoring`, `softmax_objectness`).
- EQLv2 (Tan et al., CVPR 2021; as its authors' mmdetection code): sigmoid BCE over all C
  columns (column 0 the objectness column, weights always 1), class j's negative gradients
  weighted by f(g_j), positive ones by 1 + α (1 - f(g_j)), f(g) = sigmoid(γ (g - μ)),
  g_j = accumulated |positive gradient| / accumulated |negative gradient| of column j. The
  accumulated gradients are those of the weighted loss (before the division by the RoI
  count), added after each step; until the first statistics arrive all weights are 1.
- Federated loss (Zhou et al. 2021; detectron2's `USE_FED_LOSS`): sigmoid BCE over the K
  class columns (no background column) restricted to the classes among this batch's
  targets plus negative classes sampled without replacement ∝ frequency^0.5 (the Gumbel
  top-k trick, stateless, so it compiles under XLA) up to `num_sampled` classes |S|
  (detectron2's FED_LOSS_NUM_CLASSES, 50 of LVIS's 1203; `federated_num_sampled` also takes
  it as a fraction of K). With |S| >= K every class is in every step: plain sigmoid BCE.

The pure functions (`seesaw_per_roi`, `eqlv2_per_roi`, `federated_per_roi`) take tensors and
return per-RoI losses; the callables keep the running statistics in non-trainable variables
held by `.state` (a `tf.Module`): attach it to the model so that it checkpoints with it. The
statistics are summed over replicas (`all_reduce` in a replica context) before they are
added, so every replica holds the same values.

TensorFlow is imported inside the functions: importing this module does not import it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

LONG_TAIL_LOSS_TYPES = ("seesaw", "eqlv2", "federated")
STATEFUL_LOSS_TYPES = ("seesaw", "eqlv2", "federated")


def _tf():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return tf


def _flatten(tf, class_outputs, class_targets):
    logits = tf.cast(class_outputs, tf.float32)
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("class_outputs must have a static number of classes (last dimension)")
    logits = tf.reshape(logits, [-1, num_classes])
    targets = tf.reshape(tf.cast(class_targets, tf.int32), [-1])
    return logits, targets, num_classes


def all_reduce_sum(value):
    """Sums `value` over the replicas when called in a replica context of a strategy with
    several replicas; returns it unchanged otherwise (one replica, or cross-replica context)."""
    tf = _tf()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


# --------------------------------------------------------------------------- Seesaw


def seesaw_per_roi(logits, targets, counts, p: float = 0.8, q: float = 2.0, eps: float = 1e-2):
    """Per-RoI Seesaw loss (objectness BCE + seesaw CE over the classes), shape [N].

    logits [N, C] float32 (column 0 the background / objectness logit b, columns 1..K the
    classes), targets [N] int32, counts [C - 1] running counts of the foreground classes 1..K
    (entry k is class k + 1). The class term is multiplied by is_foreground, so a background
    RoI's gradient reaches column 0 only.
    """
    tf = _tf()
    num_fg = logits.shape[-1] - 1
    fg_logits = logits[:, 1:]
    is_fg = tf.cast(targets > 0, tf.float32)
    objectness = -logits[:, 0]  # mmdetection's fg - bg objectness logits, one degree of freedom
    objectness_loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=is_fg, logits=objectness)

    fg_index = tf.maximum(targets - 1, 0)
    one_hot = tf.one_hot(fg_index, num_fg, dtype=tf.float32)
    log_weights = tf.zeros_like(fg_logits)
    if p > 0:
        clamped = tf.maximum(tf.cast(counts, tf.float32), 1.0)
        ratio = clamped[tf.newaxis, :] / clamped[:, tf.newaxis]  # [i, j] = N_j / N_i
        log_mitigation = tf.where(ratio < 1.0, p * tf.math.log(ratio), 0.0)
        log_weights += tf.gather(log_mitigation, fg_index)
    if q > 0:
        scores = tf.nn.softmax(tf.stop_gradient(fg_logits), axis=-1)
        self_scores = tf.reduce_sum(scores * one_hot, axis=-1, keepdims=True)
        score_ratio = scores / tf.maximum(self_scores, eps)
        log_weights += tf.where(score_ratio > 1.0, q * tf.math.log(tf.maximum(score_ratio, 1.0)), 0.0)
    adjusted = fg_logits + tf.stop_gradient(log_weights) * (1.0 - one_hot)
    class_loss = tf.nn.softmax_cross_entropy_with_logits(labels=one_hot, logits=adjusted)
    return objectness_loss + is_fg * class_loss


# --------------------------------------------------------------------------- EQLv2


def eqlv2_weights(pos_grad, neg_grad, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0):
    """(positive weights, negative weights), each [C]: column 0 (background) 1, columns
    1..K from g = pos / neg; all 1 while no statistics were collected (neg all 0)."""
    tf = _tf()
    ratio = pos_grad / (neg_grad + 1e-10)
    neg_w = tf.sigmoid(gamma * (ratio - mu))
    have_stats = tf.reduce_sum(neg_grad) > 0
    neg_w = tf.where(have_stats, neg_w, tf.ones_like(neg_w))
    neg_w = tf.concat([tf.ones([1], tf.float32), neg_w], axis=0)
    pos_w = 1.0 + alpha * (1.0 - neg_w)
    return pos_w, neg_w


def eqlv2_per_roi(logits, targets, pos_grad, neg_grad, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0):
    """Per-RoI EQLv2 loss [N] and this batch's (positive, negative) gradient sums [C - 1].

    The gradient sums are |d(weighted BCE)/d logit| summed over the RoIs, per class column
    1..K, as the authors collect them; they carry no gradient.
    """
    tf = _tf()
    num_classes = logits.shape[-1]
    target = tf.one_hot(targets, num_classes, dtype=tf.float32)
    pos_w, neg_w = eqlv2_weights(pos_grad, neg_grad, gamma, mu, alpha)
    weight = pos_w[tf.newaxis, :] * target + neg_w[tf.newaxis, :] * (1.0 - target)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    per_roi = tf.reduce_sum(bce * weight, axis=-1)
    prob = tf.sigmoid(tf.stop_gradient(logits))
    grad = tf.abs(target * (prob - 1.0) + (1.0 - target) * prob) * weight
    batch_pos = tf.reduce_sum(grad * target, axis=0)[1:]
    batch_neg = tf.reduce_sum(grad * (1.0 - target), axis=0)[1:]
    return per_roi, tf.stop_gradient(batch_pos), tf.stop_gradient(batch_neg)


# --------------------------------------------------------------------------- federated


def federated_class_mask(targets, class_weight, num_sampled: int, seed):
    """[K] float mask of the classes in the loss: those among `targets` (ids 1..K) plus
    negatives drawn without replacement ∝ `class_weight` ([K], classes 1..K) up to
    `num_sampled` in all; all present classes are kept when they are more. Classes of
    weight 0 are never drawn. `seed`: a [2] int tensor for the stateless draw."""
    tf = _tf()
    num_fg = class_weight.shape[0]
    present = tf.reduce_max(tf.one_hot(targets - 1, num_fg, dtype=tf.float32), axis=0)  # bg -> all 0
    if num_sampled >= num_fg:
        return tf.ones([num_fg], tf.float32)
    uniform = tf.random.stateless_uniform([num_fg], seed=seed, minval=1e-20, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    drawable = class_weight > 0
    keys = tf.math.log(tf.maximum(class_weight, 1e-30)) + gumbel
    keys = tf.where(present > 0, tf.float32.max, tf.where(drawable, keys, tf.float32.min))
    _, top = tf.math.top_k(keys, k=num_sampled)
    sampled = tf.reduce_max(tf.one_hot(top, num_fg, dtype=tf.float32), axis=0) * tf.cast(drawable, tf.float32)
    return tf.maximum(present, sampled)


def federated_per_roi(logits, targets, class_mask):
    """Per-RoI federated loss [N]: sigmoid BCE over the class columns 1..K where `class_mask`
    ([K]) is 1; background RoIs have all-zero targets; column 0 is not in the loss."""
    tf = _tf()
    num_classes = logits.shape[-1]
    target = tf.one_hot(targets, num_classes, dtype=tf.float32)[:, 1:]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits[:, 1:])
    return tf.reduce_sum(bce * class_mask[tf.newaxis, :], axis=-1)


# --------------------------------------------------------------------------- callables


def _state_variable(tf, module, name, shape, dtype):
    # Created eagerly even when first called inside a tf.function (tf.init_scope), with the
    # aggregation a replica-context update needs under a MirroredStrategy: the value added
    # is already summed over replicas, so the first replica's update is the one applied.
    with tf.init_scope():
        variable = tf.Variable(
            tf.zeros(shape, dtype),
            trainable=False,
            name=name,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
    setattr(module, name, variable)
    return variable


class _StatefulLoss:
    """Common part: `__call__(class_outputs, class_targets, class_weights=None)` -> float32
    scalar, like Model Garden's `FastrcnnClassLoss`; `state` holds the variables."""

    def __init__(self, num_classes: int, name: str):
        tf = _tf()
        if num_classes < 2:
            raise ValueError(f"num_classes is {num_classes}: background + at least one class")
        self.num_classes = int(num_classes)
        self.state = tf.Module(name=name)

    def _check(self, num_classes):
        if num_classes != self.num_classes:
            raise ValueError(f"class_outputs have {num_classes} columns, the loss was built for {self.num_classes}")


class SeesawLoss(_StatefulLoss):
    """Seesaw loss with running class counts (`state.cum_counts`, [C - 1], starting at 0 and
    clamped at 1 where used, as mmdetection's; the counts of this step are added first)."""

    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, eps: float = 1e-2, name: str = "seesaw"):
        super().__init__(num_classes, name)
        self.p, self.q, self.eps = float(p), float(q), float(eps)
        self.cum_counts = _state_variable(_tf(), self.state, "cum_counts", [self.num_classes - 1], "float32")

    def __call__(self, class_outputs, class_targets, class_weights=None):
        tf = _tf()
        with tf.name_scope("seesaw_loss"):
            logits, targets, num_classes = _flatten(tf, class_outputs, class_targets)
            self._check(num_classes)
            batch_counts = tf.reduce_sum(tf.one_hot(targets - 1, num_classes - 1, dtype=tf.float32), axis=0)
            counts = self.cum_counts.read_value() + all_reduce_sum(batch_counts)
            update = self.cum_counts.assign(counts)
            with tf.control_dependencies([update]):
                per_roi = seesaw_per_roi(logits, targets, counts, self.p, self.q, self.eps)
            return tf.reduce_sum(per_roi) / tf.cast(tf.shape(per_roi)[0], tf.float32)


class EQLv2Loss(_StatefulLoss):
    """EQLv2 with accumulated positive / negative gradients (`state.pos_grad`,
    `state.neg_grad`, [C - 1]); the weights of a step come from the statistics before it."""

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0, name: str = "eqlv2"):
        super().__init__(num_classes, name)
        self.gamma, self.mu, self.alpha = float(gamma), float(mu), float(alpha)
        tf = _tf()
        self.pos_grad = _state_variable(tf, self.state, "pos_grad", [self.num_classes - 1], "float32")
        self.neg_grad = _state_variable(tf, self.state, "neg_grad", [self.num_classes - 1], "float32")

    def __call__(self, class_outputs, class_targets, class_weights=None):
        tf = _tf()
        with tf.name_scope("eqlv2_loss"):
            logits, targets, num_classes = _flatten(tf, class_outputs, class_targets)
            self._check(num_classes)
            pos, neg = self.pos_grad.read_value(), self.neg_grad.read_value()
            per_roi, batch_pos, batch_neg = eqlv2_per_roi(logits, targets, pos, neg, self.gamma, self.mu, self.alpha)
            summed = all_reduce_sum(tf.stack([batch_pos, batch_neg]))
            batch_pos, batch_neg = summed[0], summed[1]
            updates = [self.pos_grad.assign(pos + batch_pos), self.neg_grad.assign(neg + batch_neg)]
            with tf.control_dependencies(updates):
                return tf.reduce_sum(per_roi) / tf.cast(tf.shape(per_roi)[0], tf.float32)


def federated_num_sampled(num_foreground: int, num_sampled: int = 50, fraction: Optional[float] = None) -> int:
    """|S|, the classes in each step's federated loss, for K = `num_foreground` classes: `num_sampled`
    (the paper's 50), or ceil(fraction * K) when `fraction` is given; at least 1, at most K."""
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"the federated loss's class fraction must be in (0, 1], got {fraction}")
        num_sampled = int(np.ceil(fraction * num_foreground - 1e-9))
    if num_sampled < 1:
        raise ValueError(f"the federated loss needs at least one class per step, got {num_sampled}")
    return int(min(num_sampled, num_foreground))


def federated_class_weight(class_counts: Sequence[float], power: float = 0.5) -> np.ndarray:
    """[K] sampling weights count^power of the classes 1..K from C counts (background first)."""
    counts = np.asarray(class_counts, dtype=np.float64)[1:]
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"class counts must be finite and >= 0, got {list(class_counts)}")
    return np.power(counts, power).astype(np.float32)


class FederatedLoss(_StatefulLoss):
    """Federated loss. `class_counts`: C training-set counts, background first (its entry is
    ignored); detectron2 uses each class's image count. `state.step` counts the calls and,
    with `seed` and the replica id, seeds the stateless draw of the negative classes."""

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[float],
        num_sampled: int = 50,
        power: float = 0.5,
        seed: int = 0,
        name: str = "federated",
    ):
        super().__init__(num_classes, name)
        if len(class_counts) != self.num_classes:
            raise ValueError(
                f"class_counts has {len(class_counts)} entries, num_classes is {self.num_classes}: "
                "give background first, then one count per class"
            )
        self.class_weight = federated_class_weight(class_counts, power)
        self.num_sampled = int(min(num_sampled, self.num_classes - 1))
        self.seed = int(seed)
        self.step = _state_variable(_tf(), self.state, "step", [], "int64")

    def __call__(self, class_outputs, class_targets, class_weights=None):
        tf = _tf()
        with tf.name_scope("federated_loss"):
            logits, targets, num_classes = _flatten(tf, class_outputs, class_targets)
            self._check(num_classes)
            step = self.step.read_value()
            update = self.step.assign(step + 1)
            context = tf.distribute.get_replica_context()
            replica = 0 if context is None else context.replica_id_in_sync_group
            seed = tf.stack([tf.cast(self.seed, tf.int64) * 1000 + tf.cast(replica, tf.int64), step])
            mask = federated_class_mask(targets, tf.constant(self.class_weight), self.num_sampled, seed)
            with tf.control_dependencies([update]):
                per_roi = federated_per_roi(logits, targets, mask)
                return tf.reduce_sum(per_roi) / tf.cast(tf.shape(per_roi)[0], tf.float32)


def build_long_tail_loss(
    loss_type: str,
    num_classes: int,
    *,
    seesaw_p: float = 0.8,
    seesaw_q: float = 2.0,
    eqlv2_gamma: float = 12.0,
    eqlv2_mu: float = 0.8,
    eqlv2_alpha: float = 4.0,
    fed_loss_class_counts: Optional[Sequence[float]] = None,
    fed_loss_num_classes: int = 50,
    fed_loss_freq_weight_power: float = 0.5,
    fed_loss_seed: int = 0,
    name: Optional[str] = None,
):
    """One of SeesawLoss, EQLv2Loss, FederatedLoss; creates its variables (call it once)."""
    if loss_type == "seesaw":
        return SeesawLoss(num_classes, p=seesaw_p, q=seesaw_q, name=name or "seesaw")
    if loss_type == "eqlv2":
        return EQLv2Loss(num_classes, gamma=eqlv2_gamma, mu=eqlv2_mu, alpha=eqlv2_alpha, name=name or "eqlv2")
    if loss_type == "federated":
        if not fed_loss_class_counts:
            raise ValueError("the federated loss needs the training set's class counts (background first)")
        return FederatedLoss(
            num_classes,
            fed_loss_class_counts,
            num_sampled=fed_loss_num_classes,
            power=fed_loss_freq_weight_power,
            seed=fed_loss_seed,
            name=name or "federated",
        )
    raise ValueError(f"unknown long-tail loss_type {loss_type!r}; choose one of {', '.join(LONG_TAIL_LOSS_TYPES)}")
