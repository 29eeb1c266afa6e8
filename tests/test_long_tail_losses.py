"""Long-tail losses of the box classifier (Seesaw, EQLv2, federated): hand-computed values and
gradients, the reductions to plain cross-entropy, running statistics (update, checkpoint,
XLA, two replicas), the config checks, and one training step of the task with each (slow)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmaskrcnn import losses
from tfmaskrcnn.losses import long_tail

LOG2 = np.log(2.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _value_and_grad(fn, logits):
    logits = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = fn(logits)
    return value.numpy(), tape.gradient(value, logits).numpy()


def _random_case(num_rois=12, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (num_rois, num_classes)).astype(np.float32)
    targets = rng.integers(0, num_classes, num_rois).astype(np.int32)
    targets[:2] = [1, 2]
    return logits, targets


# ------------------------------------------------------------------ Seesaw


def test_seesaw_hand_computed_value_and_gradient():
    # One RoI of class 1, logits all 0 (background b, class 1, class 2), counts N1 = 4, N2 = 1, p = 0.5.
    # Compensation: sigma = (0.5, 0.5), no class scores above the true one -> 1.
    # Mitigation of class 2: (N2 / N1)^0.5 = 0.5 -> class logits (0, log 0.5): CE = log(1 + 0.5).
    # Objectness logit -b = 0, foreground: log(1 + e^0) = log 2. Total log 3.
    def fn(logits):
        return long_tail.seesaw_per_roi(logits, tf.constant([1]), tf.constant([4.0, 1.0]), p=0.5, q=2.0)[0]

    value, grad = _value_and_grad(fn, [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(value, np.log(3.0), rtol=1e-6)
    # d/dz_fg = softmax(adjusted) - onehot = (2/3 - 1, 1/3); d/db = sigmoid(b) = 1/2.
    np.testing.assert_allclose(grad, [[1 / 2, -1 / 3, 1 / 3]], atol=1e-6)


def test_seesaw_compensation_hand_computed():
    # Class 1 true, class 2 scored higher: logits (0, 0, log 3) -> sigma = (1/4, 3/4); equal counts
    # (no mitigation); compensation (3/4 / 1/4)^q = 9 for q = 2 -> class logits (0, log 27):
    # CE = log(1 + 27) = log 28. Objectness -b = 0: log 2.
    value = long_tail.seesaw_per_roi(
        tf.constant([[0.0, 0.0, np.log(3.0)]], tf.float32), tf.constant([1]), tf.constant([5.0, 5.0]), p=0.8, q=2.0
    )
    np.testing.assert_allclose(value.numpy(), [np.log(28.0) + np.log(2.0)], rtol=1e-6)


def _numpy_seesaw(logits, targets, counts, p, q, eps=1e-2):
    """mmdetection's SeesawLoss, one RoI and class pair at a time, on its K + 2 channel layout:
    K class logits and the objectness pair (fg, bg) = (0, b), whose softmax is (σ(−b), σ(b))."""
    total = 0.0
    for z, t in zip(logits.astype(np.float64), targets):
        fg = z[1:]
        objectness = np.array([0.0, z[0]])  # mmdetection: [..., -2] positive, [..., -1] negative
        obj_label = 0 if t > 0 else 1
        total += np.log(np.sum(np.exp(objectness))) - objectness[obj_label]
        if t == 0:
            continue
        i = t - 1
        lse = np.log(np.sum(np.exp(fg)))
        sigma = np.exp(fg - lse)
        adjusted = fg.copy()
        for j in range(len(fg)):
            if j == i:
                continue
            n_i, n_j = max(counts[i], 1.0), max(counts[j], 1.0)
            factor = (n_j / n_i) ** p if n_j < n_i else 1.0
            if sigma[j] > sigma[i]:
                factor *= (sigma[j] / max(sigma[i], eps)) ** q
            adjusted[j] += np.log(factor)
        total += np.log(np.sum(np.exp(adjusted))) - adjusted[i]
    return total / len(targets)


def test_seesaw_matches_numpy_reference_and_counts_running_targets():
    logits, targets = _random_case()
    loss = losses.SeesawLoss(5, p=0.8, q=2.0)
    loss.cum_counts.assign([30.0, 2.0, 0.0, 7.0])
    value = loss(tf.constant(logits), tf.constant(targets))
    batch_counts = np.bincount(targets, minlength=5)[1:]
    counts = np.array([30.0, 2.0, 0.0, 7.0]) + batch_counts  # this step's targets count first
    np.testing.assert_allclose(loss.cum_counts.numpy(), counts)
    np.testing.assert_allclose(float(value), _numpy_seesaw(logits, targets, counts, 0.8, 2.0), rtol=1e-5)


def test_seesaw_background_rois_send_no_gradient_into_the_class_logits():
    logits, targets = _random_case(seed=4)
    targets[-4:] = 0  # four background RoIs at least
    counts = tf.constant([100.0, 3.0, 1.0, 40.0])

    def seesaw(x):
        return tf.reduce_mean(long_tail.seesaw_per_roi(x, tf.constant(targets), counts, p=0.8, q=2.0))

    _, grad = _value_and_grad(seesaw, logits)
    background = targets == 0
    assert np.all(grad[background, 1:] == 0.0), grad[background]  # exactly: the class term is masked
    # loss softplus(-b) -> d/db = -sigmoid(-b): a background RoI raises its background logit only.
    np.testing.assert_allclose(grad[background, 0], -_sigmoid(-logits[background, 0]) / len(targets), rtol=1e-5)
    assert np.all(np.abs(grad[~background, 1:]).sum(axis=1) > 0)  # foreground RoIs do train the classes


def test_seesaw_with_p_q_zero_is_objectness_bce_plus_class_cross_entropy():
    logits, targets = _random_case(seed=3)
    counts = tf.constant([100.0, 3.0, 1.0, 40.0])

    def seesaw(x):
        return tf.reduce_mean(long_tail.seesaw_per_roi(x, tf.constant(targets), counts, p=0.0, q=0.0))

    def plain(x):
        is_fg = tf.cast(targets > 0, tf.float32)
        objectness = tf.nn.sigmoid_cross_entropy_with_logits(labels=is_fg, logits=-x[:, 0])
        classes = tf.nn.softmax_cross_entropy_with_logits(
            labels=tf.one_hot(np.maximum(targets - 1, 0), 4), logits=x[:, 1:]
        )
        return tf.reduce_mean(objectness + is_fg * classes)

    value, grad = _value_and_grad(seesaw, logits)
    expected_value, expected_grad = _value_and_grad(plain, logits)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


# ------------------------------------------------------------------- EQLv2


def test_eqlv2_hand_computed_value_gradient_and_statistics():
    # One RoI of class 1, logits 0: every BCE is log 2 and every |dBCE/dz| is 1/2.
    # g = pos / neg = (1/2, 2): f = sigmoid(12 (g - 0.8)); negatives weighted f, positives 1 + 4 (1 - f);
    # column 0 (background) weighs 1 either way.
    f1, f2 = _sigmoid(12 * (0.5 - 0.8)), _sigmoid(12 * (2.0 - 0.8))
    pos_w1 = 1 + 4 * (1 - f1)
    pos, neg = tf.constant([1.0, 1.0]), tf.constant([2.0, 0.5])

    def fn(logits):
        return long_tail.eqlv2_per_roi(logits, tf.constant([1]), pos, neg)[0][0]

    value, grad = _value_and_grad(fn, [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(value, LOG2 * (1 + pos_w1 + f2), rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.5, -0.5 * pos_w1, 0.5 * f2]], rtol=1e-5)
    _, batch_pos, batch_neg = long_tail.eqlv2_per_roi(tf.zeros([1, 3]), tf.constant([1]), pos, neg)
    np.testing.assert_allclose(batch_pos.numpy(), [0.5 * pos_w1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(batch_neg.numpy(), [0.0, 0.5 * f2], rtol=1e-6)


def _bce_sum_mean(logits, targets, columns=slice(None)):
    target = tf.one_hot(targets, logits.shape[-1])[:, columns]
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits[:, columns])
    return tf.reduce_sum(bce) / logits.shape[0]


def test_eqlv2_with_uniform_statistics_is_sigmoid_bce():
    logits, targets = _random_case(seed=4)
    loss = losses.EQLv2Loss(5)

    # No statistics yet: all weights 1.
    value, grad = _value_and_grad(lambda x: loss(x, tf.constant(targets)), logits)
    expected_value, expected_grad = _value_and_grad(lambda x: _bce_sum_mean(x, targets), logits)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)
    # Balanced statistics (g far above mu, f = 1 to float precision): weights 1 again.
    balanced = long_tail.eqlv2_per_roi(tf.constant(logits), tf.constant(targets), tf.fill([4], 1e6), tf.ones([4]))[0]
    np.testing.assert_allclose(float(tf.reduce_mean(balanced)), expected_value, rtol=1e-6)


def test_eqlv2_accumulates_the_weighted_gradients():
    logits, targets = _random_case(seed=5)
    loss = losses.EQLv2Loss(5)
    loss(tf.constant(logits), tf.constant(targets))  # weights 1
    prob = _sigmoid(logits.astype(np.float64))
    onehot = np.eye(5)[targets]
    grad = np.abs(onehot * (prob - 1) + (1 - onehot) * prob)
    np.testing.assert_allclose(loss.pos_grad.numpy(), (grad * onehot).sum(0)[1:], rtol=1e-5)
    np.testing.assert_allclose(loss.neg_grad.numpy(), (grad * (1 - onehot)).sum(0)[1:], rtol=1e-5)
    # The second step is weighted by the first step's statistics and adds its weighted gradients.
    pos_w, neg_w = long_tail.eqlv2_weights(loss.pos_grad, loss.neg_grad)
    weight = onehot * pos_w.numpy() + (1 - onehot) * neg_w.numpy()
    before = loss.pos_grad.numpy().copy(), loss.neg_grad.numpy().copy()
    value = loss(tf.constant(logits), tf.constant(targets))
    bce = np.log1p(np.exp(-np.abs(logits))) + np.maximum(logits, 0) - logits * onehot
    np.testing.assert_allclose(float(value), (bce * weight).sum() / len(targets), rtol=1e-5)
    np.testing.assert_allclose(loss.pos_grad.numpy(), before[0] + (grad * weight * onehot).sum(0)[1:], rtol=1e-5)
    np.testing.assert_allclose(loss.neg_grad.numpy(), before[1] + (grad * weight * (1 - onehot)).sum(0)[1:], rtol=1e-5)


# --------------------------------------------------------------- federated


def test_federated_hand_computed_value_and_gradient():
    # K = 3 classes; the batch holds class 1 and background; one negative more is drawn and
    # only class 2 can be (class 3 has weight 0): classes {1, 2}. Logits 0: each BCE log 2, two
    # columns per RoI, two RoIs -> 2 log 2 on average. Column 0 and class 3 get no gradient.
    targets = tf.constant([1, 0])
    mask = long_tail.federated_class_mask(targets, tf.constant([5.0, 1.0, 0.0]), 2, tf.constant([0, 7], tf.int64))
    np.testing.assert_array_equal(mask.numpy(), [1.0, 1.0, 0.0])

    def fn(logits):
        return tf.reduce_mean(long_tail.federated_per_roi(logits, targets, mask))

    value, grad = _value_and_grad(fn, np.zeros((2, 4)))
    np.testing.assert_allclose(value, 2 * LOG2, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0, -0.25, 0.25, 0], [0, 0.25, 0.25, 0]], atol=1e-7)


def test_federated_with_all_classes_is_sigmoid_bce_over_the_classes():
    logits, targets = _random_case(seed=6)
    loss = losses.FederatedLoss(5, [0, 10, 1, 1, 3], num_sampled=50)  # capped at K = 4: all classes
    value, grad = _value_and_grad(lambda x: loss(x, tf.constant(targets)), logits)
    expected_value, expected_grad = _value_and_grad(lambda x: _bce_sum_mean(x, targets, slice(1, None)), logits)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)
    assert int(loss.step.numpy()) == 1


def test_federated_samples_negatives_in_proportion_to_weight():
    weight = tf.constant([1.0, 4.0, 0.0, 5.0])  # sqrt of image counts 1, 16, 0, 25
    targets = tf.constant([0, 0, 3])  # class 3 present, one negative to draw among classes 1, 2, 4

    @tf.function
    def draw(step):
        return long_tail.federated_class_mask(targets, weight, 2, tf.stack([tf.constant(0, tf.int64), step]))

    masks = np.stack([draw(tf.constant(s, tf.int64)).numpy() for s in range(3000)])
    assert np.all(masks[:, 2] == 1) and np.all(masks.sum(1) == 2)  # present class kept, 2 in all
    np.testing.assert_allclose(masks[:, [0, 1, 3]].mean(0), [0.1, 0.4, 0.5], atol=0.03)
    assert len({tuple(m) for m in masks}) == 3  # the draw changes with the step


def test_federated_class_count_as_a_fraction_of_k():
    # detectron2 / the paper: |S| = 50 classes; at K <= 50 that is every class (plain BCE).
    assert long_tail.federated_num_sampled(1203) == 50
    assert long_tail.federated_num_sampled(5) == 5
    # A fraction of K: ceil(x * K), at least 1, at most K; the paper's 50 / 1203 gives 50 back.
    assert long_tail.federated_num_sampled(5, fraction=0.4) == 2
    assert long_tail.federated_num_sampled(5, fraction=0.01) == 1
    assert long_tail.federated_num_sampled(1203, fraction=50 / 1203) == 50
    assert long_tail.federated_num_sampled(5, fraction=1.0) == 5
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        long_tail.federated_num_sampled(5, fraction=0.0)


def test_federated_loss_samples_at_small_k_when_configured():
    """K = 5, |S| = 2 (fraction 0.4): a batch whose only class is 2 has class 2 plus one negative in its
    loss, drawn by count^0.5 and changing with the step; the columns outside S get no gradient and the
    value is the BCE over S computed in numpy."""
    counts = [0, 100, 4, 1, 25, 0]  # background first; class 5 in no image: never drawn
    loss = losses.FederatedLoss(6, counts, num_sampled=long_tail.federated_num_sampled(5, fraction=0.4), seed=3)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (4, 6)).astype(np.float32)
    targets = np.array([2, 0, 0, 2], np.int32)
    drawn = []
    for _ in range(400):
        value, grad = _value_and_grad(lambda x: loss(x, tf.constant(targets)), logits)
        in_loss = np.flatnonzero(np.abs(grad[:, 1:]).sum(0) > 0) + 1  # class ids with a gradient
        assert 2 in in_loss and len(in_loss) == 2 and 5 not in in_loss, in_loss
        negative = int(in_loss[in_loss != 2][0])
        drawn.append(negative)
        onehot = np.eye(6)[targets][:, 1:]
        bce = -(onehot * np.log(_sigmoid(logits[:, 1:])) + (1 - onehot) * np.log(1 - _sigmoid(logits[:, 1:])))
        np.testing.assert_allclose(value, bce[:, [1, negative - 1]].sum(1).mean(), rtol=1e-5)
    shares = np.bincount(drawn, minlength=6)[[1, 3, 4]] / len(drawn)
    np.testing.assert_allclose(shares, np.array([10, 1, 5]) / 16, atol=0.06)  # sqrt of 100, 1, 25


def _federated_task(fraction=None, num_classes=50):
    task = _params()  # K = 3
    task.class_balance.loss_type = "federated"
    task.class_balance.fed_loss_class_counts = [0, 9, 4, 1]
    task.class_balance.fed_loss_fraction = fraction
    task.class_balance.fed_loss_num_classes = num_classes
    task.model.detection_generator.use_sigmoid_probability = True
    return task


def test_federated_fraction_resolves_into_the_class_count():
    from tfmaskrcnn.tasks import config_resolution

    task = _federated_task(fraction=0.5)
    with pytest.raises(config_resolution.UnresolvedConfigError, match=r"\|S\| = 2 of 3 classes"):
        config_resolution.check_long_tail_loss(task)  # what the task sees: must come resolved
    config_resolution.check_long_tail_loss(task, read_data=True)  # what training start does
    assert task.class_balance.fed_loss_num_classes == 2
    config_resolution.check_long_tail_loss(task)  # now resolved
    notes = config_resolution.start_notes(task)
    assert any("federated loss: |S| = 2 of K = 3 classes per step (ceil(0.5 x K))" in n for n in notes), notes
    # The paper's count on 3 classes: every class in every step, and the start line says so.
    plain = _federated_task()
    config_resolution.check_long_tail_loss(plain, read_data=True)
    assert any("plain sigmoid BCE" in n and "fed_loss_fraction" in n for n in config_resolution.start_notes(plain))
    with pytest.raises(config_resolution.ConfigError, match="fed_loss_fraction"):
        config_resolution.check_long_tail_loss(_federated_task(fraction=1.5), read_data=True)
    with pytest.raises(config_resolution.ConfigError, match="fed_loss_num_classes is 0"):
        config_resolution.check_long_tail_loss(_federated_task(num_classes=0), read_data=True)


# ----------------------------------------------------------- all three losses


def _build(loss_type, num_classes=5):
    return losses.build_long_tail_loss(
        loss_type, num_classes, fed_loss_class_counts=[0, 9, 4, 1, 16], fed_loss_num_classes=2
    )


def _state(loss):
    return [v.numpy().copy() for v in loss.state.variables]


@pytest.mark.parametrize("loss_type", losses.LONG_TAIL_LOSS_TYPES)
def test_xla_and_mixed_precision_match_eager(loss_type):
    logits, targets = _random_case(seed=7)
    logits = logits.reshape(2, 6, 5)
    targets = targets.reshape(2, 6)
    eager, compiled = _build(loss_type), _build(loss_type)
    step = tf.function(lambda x, t: compiled(x, t), jit_compile=True, autograph=False)
    for _ in range(2):  # the second step uses the statistics of the first
        expected = eager(tf.constant(logits), tf.constant(targets))
        value = step(tf.constant(logits), tf.constant(targets))
        np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)
    for mine, theirs in zip(_state(compiled), _state(eager)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
    # Half-precision logits: the loss is float32 and close to the float32 one.
    half = _build(loss_type)(tf.constant(logits, tf.bfloat16), tf.constant(targets))
    assert half.dtype == tf.float32
    np.testing.assert_allclose(
        float(half), float(_build(loss_type)(tf.constant(logits), tf.constant(targets))), rtol=0.03
    )


@pytest.mark.parametrize("loss_type", losses.LONG_TAIL_LOSS_TYPES)
def test_statistics_update_and_survive_a_checkpoint(loss_type, tmp_path):
    logits, targets = _random_case(seed=8)
    loss = _build(loss_type)
    initial = _state(loss)
    for _ in range(2):
        loss(tf.constant(logits), tf.constant(targets))
    trained = _state(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(initial, trained)), "no statistic changed"
    holder = tf.Module()
    holder.class_loss_state = loss.state
    path = tf.train.Checkpoint(model=holder).save(str(tmp_path / "ckpt"))

    fresh = _build(loss_type)
    restored = tf.Module()
    restored.class_loss_state = fresh.state
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    for mine, theirs in zip(_state(fresh), trained):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_allclose(
        float(fresh(tf.constant(logits), tf.constant(targets))),
        float(loss(tf.constant(logits), tf.constant(targets))),
        rtol=1e-6,
    )


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfmaskrcnn import losses

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 8, 5)).astype(np.float32)  # one half per replica
    targets = rng.integers(0, 5, (2, 8)).astype(np.int32)
    targets[0, :3] = 1
    targets[1, :3] = 4  # class 4 only on replica 1, class 1 mostly on replica 0
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for loss_type in losses.LONG_TAIL_LOSS_TYPES:
        with strategy.scope():
            loss = losses.build_long_tail_loss(loss_type, 5, fed_loss_class_counts=[0, 9, 4, 1, 16],
                                               fed_loss_num_classes=50)
        single = losses.build_long_tail_loss(loss_type, 5, fed_loss_class_counts=[0, 9, 4, 1, 16],
                                             fed_loss_num_classes=50)
        inputs = strategy.experimental_distribute_values_from_function(
            lambda ctx: (tf.constant(logits[ctx.replica_id_in_sync_group]),
                         tf.constant(targets[ctx.replica_id_in_sync_group])))

        @tf.function
        def step(x):
            return strategy.run(lambda a: loss(a[0], a[1]), args=(x,))

        for _ in range(2):
            values = strategy.experimental_local_results(step(inputs))
            expected = single(tf.constant(logits.reshape(16, 5)), tf.constant(targets.reshape(16)))
        per_replica = [[v.numpy().tolist() for v in var.values] for var in loss.state.variables]
        out[loss_type] = {
            "replicas": strategy.num_replicas_in_sync,
            "state": per_replica,
            "single_state": [v.numpy().tolist() for v in single.state.variables],
            "mean_loss": float(np.mean([v.numpy() for v in values])),
            "single_loss": float(expected),
        }
    json.dump(out, sys.stdout)
    """
)


def test_two_replicas_reduce_the_statistics():
    """Two logical CPU devices (set before TensorFlow starts, so in a fresh process): after two
    steps the statistics are identical on both replicas and equal to one replica seeing the
    whole batch; so is the loss (averaged over the two halves, each of equal size)."""
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for loss_type, found in result.items():
        assert found["replicas"] == 2
        for replicas, single in zip(found["state"], found["single_state"]):
            np.testing.assert_allclose(replicas[0], replicas[1], err_msg=loss_type)
            if loss_type != "federated":  # its step counter counts steps, not replicas
                np.testing.assert_allclose(replicas[0], single, rtol=1e-5, err_msg=loss_type)
        np.testing.assert_allclose(found["mean_loss"], found["single_loss"], rtol=1e-5, err_msg=loss_type)
    assert result["federated"]["state"][0][0] == 2  # one step counted per step


# ------------------------------------------------------------ config checks


def _params():
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.task.model.num_classes = 4
    return params.task


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loss_type": "seesw"}, "use one of softmax, sigmoid_focal, logit_adjusted, seesaw, eqlv2, federated"),
        ({"loss_type": "seesaw", "scheme": "sqrt_inverse"}, "weighting.scheme none"),
        ({"loss_type": "federated", "sigmoid": True}, "fed_loss_class_counts is empty"),
        ({"loss_type": "federated", "sigmoid": True, "counts": [1, 2, 3]}, "background first"),
    ],
)
def test_config_check_says_the_fix(change, message):
    from tfmaskrcnn.tasks import config_resolution

    task = _params()
    task.class_balance.loss_type = change["loss_type"]
    task.class_balance.weighting.scheme = change.get("scheme", "none")
    task.class_balance.fed_loss_class_counts = change.get("counts")
    task.model.detection_generator.use_sigmoid_probability = change.get("sigmoid", False)
    with pytest.raises(config_resolution.ConfigError, match=message):
        config_resolution.check_long_tail_loss(task)


@pytest.mark.parametrize(
    "loss_type, given, resolved",
    [
        ("eqlv2", False, True),  # Model Garden's default false counts as unset: the loss sets it
        ("federated", False, True),
        ("sigmoid_focal", False, True),
        ("eqlv2", True, True),
        ("seesaw", False, False),
        ("softmax", False, False),
    ],
)
def test_the_loss_resolves_its_scoring(loss_type, given, resolved):
    from tfmaskrcnn.tasks import config_resolution

    task = _params()
    task.class_balance.loss_type = loss_type
    task.model.detection_generator.use_sigmoid_probability = given
    scoring = config_resolution.resolve_scoring(task)
    assert task.model.detection_generator.use_sigmoid_probability is resolved
    assert scoring.startswith("sigmoid") is resolved
    note = config_resolution.scoring_note(task)
    assert f"use_sigmoid_probability={str(resolved).lower()}" in note and loss_type in note


@pytest.mark.parametrize("loss_type", ["seesaw", "softmax"])
def test_an_explicit_contradicting_scoring_is_refused(loss_type):
    from tfmaskrcnn.tasks import config_resolution

    task = _params()
    task.class_balance.loss_type = loss_type
    task.model.detection_generator.use_sigmoid_probability = True
    with pytest.raises(config_resolution.ConfigError, match="trains softmax scores"):
        config_resolution.resolve_scoring(task)


def test_a_resolved_config_must_carry_the_scoring():
    from tfmaskrcnn.tasks import config_resolution

    task = _params()
    task.class_balance.loss_type = "sigmoid_focal"
    with pytest.raises(config_resolution.UnresolvedConfigError, match="scores with sigmoid"):
        config_resolution.resolve_scoring(task, resolve=False)


# ------------------------------------------------------- the task, one step each


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", losses.LONG_TAIL_LOSS_TYPES)
def test_task_trains_one_step_and_checkpoints_the_statistics(loss_type, shapes_records, tiny_experiment, tmp_path):
    from official.core import task_factory

    from tfmaskrcnn.tasks import config_resolution

    def build():
        params = tiny_experiment(shapes_records)
        params.task.class_balance.loss_type = loss_type
        config_resolution.resolve_config(params.task)  # sets the scoring the loss needs
        task = task_factory.get_task(params.task)
        model = task.build_model()
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        return params, task, model, optimizer

    params, task, model, optimizer = build()
    assert params.task.model.detection_generator.use_sigmoid_probability is (loss_type != "seesaw")
    expected_scoring = {"seesaw": "softmax_objectness", "eqlv2": "sigmoid_objectness"}.get(loss_type)
    assert getattr(model.detection_generator, "scoring", None) == expected_scoring
    if loss_type == "federated":  # image counts of the 3 shapes, background first
        counts = params.task.class_balance.fed_loss_class_counts
        assert len(counts) == 4 and counts[0] == 0 and min(counts[1:]) > 0
    state = model.class_loss_state.stages[0]
    assert not any(v.trainable for v in state.variables)
    assert all(id(v) not in {id(w) for w in model.trainable_variables} for v in state.variables)
    before = [v.numpy().copy() for v in state.variables]
    metrics = task.build_metrics(training=True)
    inputs = next(iter(task.build_inputs(params.task.train_data)))
    logs = tf.function(task.train_step)(inputs, model=model, optimizer=optimizer, metrics=metrics)
    loss = float(logs[task.loss])
    assert np.isfinite(loss) and loss > 0
    after = [v.numpy().copy() for v in state.variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the statistics did not update"

    # Model Garden's trainer checkpoints model and optimizer: the statistics go with the model.
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    _, _, model2, optimizer2 = build()
    tf.train.Checkpoint(model=model2, optimizer=optimizer2).read(path).expect_partial()
    for restored, saved in zip(model2.class_loss_state.stages[0].variables, after):
        np.testing.assert_array_equal(restored.numpy(), saved)


class _StopBeforeTheTask(Exception):
    pass


def test_training_start_prints_and_records_the_resolved_long_tail_settings(monkeypatch, shapes_records, tmp_path):
    """`tfmaskrcnn train` says at start how detections are scored, the federated |S| and the repeat-factor
    rule, and keeps the lines in params.yaml (beside the fields they come from) and class_balance.md."""
    import yaml
    from official.core import exp_factory

    from tfmaskrcnn.cli import train

    def get_task(*args, **kwargs):
        raise _StopBeforeTheTask

    monkeypatch.setattr(train.task_factory, "get_task", get_task)
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(
        {
            "task": {
                "train_data": {"input_path": shapes_records["train"], "sampling": {"type": "repeat_factor"}},
                "validation_data": {"input_path": shapes_records["val"]},
                "class_balance": {"loss_type": "federated", "fed_loss_fraction": 0.5},
            }
        }
    )
    lines = []
    with pytest.raises(_StopBeforeTheTask):
        train.run(params, str(tmp_path / "run"), "train", announce=lines.append)
    scoring = next(line for line in lines if line.startswith("scoring: "))
    assert "scoring: sigmoid" in scoring and "use_sigmoid_probability=true" in scoring, scoring
    assert "federated loss: |S| = 2 of K = 3 classes per step" in "\n".join(lines), lines
    rfs = next(line for line in lines if line.startswith("repeat-factor sampling: "))
    assert "r = max(1, sqrt(t / f)), at most 10" in rfs and "f_max / 2 = " in rfs, rfs
    text = (tmp_path / "run" / "params.yaml").read_text()
    for line in (scoring, rfs):
        assert f"# resolved at training start: {line}\n" in text
    task = yaml.safe_load(text)["task"]
    assert task["class_balance"]["fed_loss_num_classes"] == 2
    assert task["model"]["detection_generator"]["use_sigmoid_probability"] is True
    sampling = task["train_data"]["sampling"]
    assert sampling["threshold_rule"].startswith("f_max / 2 = ") and sampling["max_repeat_factor"] == 10.0
    report = (tmp_path / "run" / "class_balance.md").read_text()
    assert f"- {scoring}" in report and f"- {rfs}" in report
