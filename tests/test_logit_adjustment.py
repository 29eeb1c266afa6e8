"""Train-time logit adjustment / Balanced Softmax (`class_balance.loss_type: logit_adjusted`).

The adjustment vector and the loss (value and gradient) against numpy by hand; the config
resolution (counts from the data, no class weights, plain softmax scoring); and, through the public
entry points (slow), one `task.train_step` of the registered experiment whose classification loss is
the adjusted cross-entropy of the step's own logits, not the plain one.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfmaskrcnn import losses
from tfmaskrcnn.losses import logit_adjustment as la


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_loss_and_grad(logits, targets, adjustment):
    """Mean over RoIs of the softmax cross-entropy of logits + adjustment, and its gradient."""
    z = np.asarray(logits, np.float64).reshape(-1, len(adjustment)) + np.asarray(adjustment)
    t = np.asarray(targets).reshape(-1).astype(np.int64)
    p = _softmax(z)
    loss = -np.log(p[np.arange(len(t)), t]).mean()
    grad = (p - np.eye(z.shape[1])[t]) / len(t)
    return loss, grad.reshape(np.shape(logits))


# ------------------------------------------------------------------ the adjustment


def test_adjustment_by_hand_and_its_properties():
    # counts (background ignored) 3 : 1 -> pi = (0.75, 0.25); tau 1: a_c = log(K pi_c) = log 1.5, log 0.5.
    np.testing.assert_allclose(la.logit_adjustment([0, 3, 1], 1.0), [0.0, np.log(1.5), np.log(0.5)], atol=1e-12)
    # tau 2: 2 log pi_c + log(sum pi^-1) = 2 log pi_c + log(4/3 + 4) = log(0.5625 * 16/3), log(0.0625 * 16/3).
    np.testing.assert_allclose(
        la.logit_adjustment([0, 3, 1], 2.0), [0.0, np.log(0.5625 * 16 / 3), np.log(0.0625 * 16 / 3)], atol=1e-12
    )
    counts = [7, 800, 80, 50, 40, 30]
    for tau in (0.0, 0.5, 1.0, 1.5):
        a = la.logit_adjustment(counts, tau)
        prior = np.array(counts[1:], float) / sum(counts[1:])
        assert a[0] == 0.0  # background never adjusted
        # The foreground mass of a training-distributed RoI is kept in expectation.
        np.testing.assert_allclose(np.sum(prior * np.exp(-a[1:])), 1.0, rtol=1e-12)
        # Between the classes it is Menon's tau * log pi (differences of the columns).
        np.testing.assert_allclose(np.diff(a[1:]), tau * np.diff(np.log(prior)), atol=1e-12)
    assert np.array_equal(la.logit_adjustment(counts, 0.0), np.zeros(6))
    np.testing.assert_allclose(la.logit_adjustment([0, 5, 5, 5], 1.7), np.zeros(4), atol=1e-12)  # balanced
    # A class without instances counts as 1 (log 0 would be -inf).
    np.testing.assert_allclose(la.logit_adjustment([0, 9, 0], 1.0), [0.0, np.log(1.8), np.log(0.2)], atol=1e-12)
    with pytest.raises(ValueError, match="tau"):
        la.logit_adjustment(counts, -1.0)
    with pytest.raises(ValueError, match="background first"):
        la.logit_adjustment([4], 1.0)


# ------------------------------------------------------------------ the loss


def _value_and_grad(logits, targets, **kwargs):
    import tensorflow as tf

    z = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = losses.weighted_classification_loss(z, tf.constant(targets), **kwargs)
    return float(value), tape.gradient(value, z).numpy()


def test_loss_and_gradient_by_hand_on_two_rois():
    # counts [_, 3, 1], tau 1: a = [0, log 1.5, log 0.5]. Logits 0. RoI of class 2: adjusted exp = [1, 1.5, 0.5],
    # sum 3: CE = log 6 (plain: log 3), gradient softmax - onehot = [1/3, 1/2, 1/6 - 1]. A background RoI:
    # CE = log 3, gradient [1/3 - 1, 1/2, 1/6]. Mean of the two, gradients / 2.
    adjustment = la.logit_adjustment([0, 3, 1], 1.0)
    value, grad = _value_and_grad(
        np.zeros((1, 2, 3)), [[2, 0]], class_weights=[1.0] * 3, loss_type="logit_adjusted", logit_adjustment=adjustment
    )
    np.testing.assert_allclose(value, (np.log(6.0) + np.log(3.0)) / 2, rtol=1e-6)
    np.testing.assert_allclose(grad[0], [[1 / 6, 1 / 4, -5 / 12], [-1 / 3, 1 / 4, 1 / 12]], atol=1e-6)
    plain, _ = _value_and_grad(np.zeros((1, 2, 3)), [[2, 0]], class_weights=[1.0] * 3)
    np.testing.assert_allclose(plain, np.log(3.0), rtol=1e-6)


def test_loss_matches_numpy_on_random_rois_and_is_plain_ce_at_tau_zero():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 8, 5))
    targets = rng.integers(0, 5, (2, 8))
    adjustment = la.logit_adjustment([0, 500, 60, 20, 5], 1.0)
    loss_fn = losses.WeightedFastrcnnClassLoss([1.0] * 5, loss_type="logit_adjusted", logit_adjustment=adjustment)
    import tensorflow as tf

    z = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss_fn(z, tf.constant(targets))
    expected, expected_grad = _numpy_loss_and_grad(logits, targets, adjustment)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(value, z).numpy(), expected_grad, atol=1e-6)
    plain, _ = _numpy_loss_and_grad(logits, targets, np.zeros(5))
    assert abs(expected - plain) > 0.05
    zero = la.logit_adjustment([0, 500, 60, 20, 5], 0.0)
    at_zero, _ = _value_and_grad(
        logits, targets, class_weights=[1.0] * 5, loss_type="logit_adjusted", logit_adjustment=zero
    )
    np.testing.assert_allclose(at_zero, plain, rtol=1e-5)


def test_the_loss_needs_its_adjustment():
    with pytest.raises(ValueError, match="needs logit_adjustment"):
        losses.WeightedFastrcnnClassLoss([1.0] * 3, loss_type="logit_adjusted")
    with pytest.raises(ValueError, match="needs 3 logit adjustments"):
        _value_and_grad(
            np.zeros((1, 1, 3)), [[1]], class_weights=[1.0] * 3, loss_type="logit_adjusted", logit_adjustment=[0.0]
        )


# ------------------------------------------------------------------ config


def _task_config():
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.task.model.num_classes = 4
    params.task.class_balance.loss_type = "logit_adjusted"
    return params.task


def test_config_checks_say_the_fix_and_scoring_stays_softmax():
    from tfmaskrcnn.losses import scoring
    from tfmaskrcnn.tasks import config_resolution

    task = _task_config()
    with pytest.raises(config_resolution.UnresolvedConfigError, match="logit_adjustment_counts is empty"):
        config_resolution.check_long_tail_loss(task)
    task.class_balance.logit_adjustment_counts = [0, 10, 2]
    with pytest.raises(config_resolution.ConfigError, match="has 3 entries, num_classes is 4"):
        config_resolution.check_long_tail_loss(task)
    task.class_balance.logit_adjustment_counts = [0, 10, 2, 1]
    config_resolution.check_long_tail_loss(task)
    task.class_balance.weighting.scheme = "sqrt_inverse"
    with pytest.raises(config_resolution.ConfigError, match="takes no class weights"):
        config_resolution.check_long_tail_loss(task)
    task.class_balance.weighting.scheme = "none"
    task.class_balance.logit_adjustment_tau = -0.5
    with pytest.raises(config_resolution.ConfigError, match="logit_adjustment_tau is -0.5"):
        config_resolution.check_long_tail_loss(task)
    task.class_balance.logit_adjustment_tau = 1.0
    assert config_resolution.resolve_scoring(task) == "softmax" == scoring.scoring_of("logit_adjusted")
    assert task.model.detection_generator.use_sigmoid_probability is False
    note = "\n".join(config_resolution.start_notes(task))
    assert "scored from the raw logits" in note and "tau 1" in note


def test_resolution_fills_the_instance_counts_from_the_training_data(shapes_records, tiny_experiment):
    from tfmaskrcnn.tasks import config_resolution

    params = tiny_experiment(shapes_records)
    params.task.class_balance.loss_type = "logit_adjusted"
    config_resolution.resolve_config(params.task)
    stats = config_resolution.load_training_stats(shapes_records["train"])
    assert params.task.class_balance.logit_adjustment_counts == [0.0] + [float(c) for c in stats.instance_counts]
    config_resolution.check_resolved(params.task)  # resolved: nothing left unset


# ------------------------------------------------ through the public entry points


@pytest.mark.slow
def test_train_step_loss_is_the_adjusted_cross_entropy_of_its_own_logits(shapes_records, tiny_experiment):
    """The registered experiment's task and model, `train_step` on one batch (learning rate 0, same
    seed, so both tasks draw the same RoIs): the classification loss the step logs is the adjusted
    cross-entropy of the logits and targets the step produced, computed here in numpy, and the stock
    task's is the plain one of the same logits. The box head is scored with the plain softmax."""
    import tf_keras

    from tfmaskrcnn.tasks import config_resolution
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    def task_of(loss_type):
        params = tiny_experiment(shapes_records)
        params.task.class_balance.loss_type = loss_type
        params.task.class_balance.logit_adjustment_counts = [0.0, 200.0, 20.0, 2.0]
        config_resolution.resolve_config(params.task)
        return params, TfMaskRCNNTask(params.task)

    stock_params, stock = task_of("softmax")
    _, adjusted = task_of("logit_adjusted")
    model = adjusted.build_model()
    assert getattr(model.detection_generator, "scoring", None) is None  # Model Garden's softmax generator
    assert not model.detection_generator.get_config()["use_sigmoid_probability"]
    batch = next(iter(stock.build_inputs(stock_params.task.train_data)))
    optimizer = tf_keras.optimizers.SGD(learning_rate=0.0)

    logs, seen = {}, {}
    for name, task in (("stock", stock), ("adjusted", adjusted)):
        real = task.build_losses

        def spy(outputs, labels, aux_losses=None, name=name, real=real):
            seen[name] = (outputs["class_outputs"].numpy(), outputs["class_targets"].numpy())
            return real(outputs, labels, aux_losses)

        task.build_losses = spy
        metrics = task.build_metrics(training=True)
        tf_keras.utils.set_random_seed(7)
        task.train_step(batch, model, optimizer, metrics=metrics)
        logs[name] = {m.name: float(m.result()) for m in metrics}

    logits, targets = seen["adjusted"]
    np.testing.assert_array_equal(seen["stock"][1], targets)  # the same RoIs
    assert (targets > 0).any() and (targets == 0).any()
    adjustment = la.logit_adjustment([0.0, 200.0, 20.0, 2.0], 1.0)
    by_hand, _ = _numpy_loss_and_grad(logits, targets, adjustment)
    plain, _ = _numpy_loss_and_grad(seen["stock"][0], targets, np.zeros(4))
    np.testing.assert_allclose(logs["adjusted"]["frcnn_cls_loss"], by_hand, rtol=1e-5)
    np.testing.assert_allclose(logs["stock"]["frcnn_cls_loss"], plain, rtol=1e-5)
    # The two losses must be told apart at the tolerance the equalities above use (1e-5): 100x that.
    # How far apart they are depends on the RoIs drawn (mostly background, which is not adjusted):
    # 1.3% and more than 2% were both seen, so no fixed share of the loss is asserted.
    assert abs(by_hand - plain) > 1e-3 * plain, (by_hand, plain)
    for key in ("rpn_score_loss", "rpn_box_loss", "frcnn_box_loss", "mask_loss"):
        np.testing.assert_allclose(logs["adjusted"][key], logs["stock"][key], rtol=1e-5, err_msg=key)
