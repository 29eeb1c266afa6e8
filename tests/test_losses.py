"""Class-weight schemes (hand-computed numbers) and the weighted classification loss."""

import numpy as np
import pytest
import tensorflow as tf
from official.vision.losses import maskrcnn_losses

from tfmaskrcnn import losses

COUNTS = [100, 25, 4]  # 129 instances


@pytest.mark.parametrize(
    "scheme, expected_foreground",
    [
        ("none", [1.0, 1.0, 1.0]),
        # raw 1/n = 0.01, 0.04, 0.25; sum n*raw = 3; scale 129 / 3 = 43
        ("inverse", [0.43, 1.72, 10.75]),
        # raw 1/sqrt(n) = 0.1, 0.2, 0.5; sum n*raw = 17; scale 129 / 17
        ("sqrt_inverse", [12.9 / 17, 25.8 / 17, 64.5 / 17]),
    ],
)
def test_schemes_match_hand_computed_weights(scheme, expected_foreground):
    weights = losses.compute_class_weights(COUNTS, scheme, background_weight=0.5)
    np.testing.assert_allclose(weights, [0.5] + expected_foreground, rtol=1e-12)


def test_effective_number_matches_hand_computed_weights():
    # beta 0.5, n = 1, 2, 3: raw (1 - b)/(1 - b^n) = 1, 2/3, 4/7; sum n*raw = 85/21; scale 6 * 21 / 85
    weights = losses.compute_class_weights([1, 2, 3], "effective_number", beta=0.5)
    np.testing.assert_allclose(weights, [1.0, 126 / 85, 84 / 85, 72 / 85], rtol=1e-12)


@pytest.mark.parametrize("scheme", ["inverse", "sqrt_inverse", "effective_number"])
def test_foreground_weights_keep_the_instance_weighted_mean_at_one(scheme):
    counts = np.array([900, 70, 30])
    weights = losses.compute_class_weights(counts, scheme, background_weight=3.0)
    assert weights[0] == 3.0
    assert np.sum(counts * weights[1:]) / counts.sum() == pytest.approx(1.0, rel=1e-12)
    assert weights[1] < weights[2] < weights[3]


def test_max_ratio_clips_then_renormalizes():
    # inverse raw 0.01, 0.04, 0.25 -> clipped to <= 0.01 * 4 -> 0.01, 0.04, 0.04; sum n*raw = 2.16
    weights = losses.compute_class_weights(COUNTS, "inverse", max_ratio=4.0)
    np.testing.assert_allclose(weights, [1.0, 1.29 / 2.16, 5.16 / 2.16, 5.16 / 2.16], rtol=1e-12)
    assert weights[1:].max() / weights[1:].min() == pytest.approx(4.0)


def test_class_without_instances_gets_the_largest_weight():
    # inverse on 100, 0, 25: raw 0.01, (max) 0.04, 0.04; sum n*raw = 2 over 125 instances
    weights = losses.compute_class_weights([100, 0, 25], "inverse")
    np.testing.assert_allclose(weights, [1.0, 0.625, 2.5, 2.5], rtol=1e-12)


def test_explicit_weights_of_either_length():
    np.testing.assert_allclose(
        losses.compute_class_weights(COUNTS, "explicit", weights=[1, 2, 3], background_weight=0.25),
        [0.25, 1, 2, 3],
    )
    np.testing.assert_allclose(losses.compute_class_weights(COUNTS, "explicit", weights=[0.5, 1, 2, 3]), [0.5, 1, 2, 3])


def test_explicit_weights_of_wrong_length_say_what_is_expected():
    expected = r"weights has 5 entries; expected 3 \(one per class\) or 4 \(background first"
    with pytest.raises(ValueError, match=expected):
        losses.compute_class_weights(COUNTS, "explicit", weights=[1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="needs weights"):
        losses.compute_class_weights(COUNTS, "explicit")


def test_check_class_weights_message_names_the_fix():
    with pytest.raises(ValueError) as error:
        losses.check_class_weights([1.0, 2.0, 3.0], num_classes=4)
    assert str(error.value) == (
        "class_weights has 3 entries, num_classes is 4 (background + 3 classes): add the background weight first"
    )
    with pytest.raises(ValueError, match="finite and >= 0"):
        losses.check_class_weights([1.0, -1.0], num_classes=2)


def test_bad_scheme_and_counts_are_refused():
    with pytest.raises(ValueError, match="unknown class weighting scheme 'inverted'"):
        losses.compute_class_weights(COUNTS, "inverted")
    with pytest.raises(ValueError, match="every class has 0 instances"):
        losses.compute_class_weights([0, 0], "inverse")
    with pytest.raises(ValueError, match="beta must be in"):
        losses.compute_class_weights(COUNTS, "effective_number", beta=1.0)


def _batch(seed=0, batch=2, rois=16, num_classes=4):
    rng = np.random.default_rng(seed)
    logits = tf.constant(rng.normal(size=(batch, rois, num_classes)) * 2, tf.float32)
    targets = tf.constant(rng.integers(0, num_classes, size=(batch, rois)).astype(np.float32))
    return logits, targets


def test_weight_sum_with_unit_weights_equals_model_garden():
    logits, targets = _batch()
    ours = losses.weighted_classification_loss(logits, targets, [1.0] * 4, normalization="weight_sum")
    theirs = maskrcnn_losses.FastrcnnClassLoss()(logits, targets)
    assert abs(float(ours) - float(theirs)) < 1e-6


def test_mean_normalization_equals_model_garden_with_weights():
    logits, targets = _batch(seed=1)
    weights = [0.5, 1.0, 2.0, 4.0]
    ours = losses.weighted_classification_loss(logits, targets, weights, normalization="mean")
    theirs = maskrcnn_losses.FastrcnnClassLoss()(logits, targets, class_weights=weights)
    assert abs(float(ours) - float(theirs)) < 1e-6


def test_weight_sum_does_not_change_with_weight_scale_but_mean_does():
    logits, targets = _batch(seed=2)
    weights = np.array([0.5, 1.0, 2.0, 4.0])
    for normalization, factor in (("weight_sum", 1.0), ("mean", 10.0)):
        base = losses.weighted_classification_loss(logits, targets, weights, normalization=normalization)
        scaled = losses.weighted_classification_loss(logits, targets, weights * 10, normalization=normalization)
        assert float(scaled) == pytest.approx(factor * float(base), rel=1e-5)


def test_weighted_softmax_gradient_matches_the_analytic_one():
    logits, targets = _batch(seed=3)
    weights = np.array([0.3, 1.0, 2.5, 0.7], dtype=np.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.weighted_classification_loss(logits, targets, weights)
    gradient = tape.gradient(loss, logits).numpy()
    # d/dz of sum_i w_i CE_i / sum_i w_i is w_i (softmax(z_i) - onehot_i) / sum w.
    target_ids = targets.numpy().astype(int)
    roi_weights = weights[target_ids]
    expected = roi_weights[..., None] * (tf.nn.softmax(logits).numpy() - np.eye(4)[target_ids]) / roi_weights.sum()
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_focal_gradient_matches_finite_differences():
    logits, targets = _batch(seed=4, batch=1, rois=6)
    weights = [0.5, 1.0, 2.0, 3.0]

    def loss_of(values):
        return float(
            losses.weighted_classification_loss(
                tf.constant(values), targets, weights, loss_type="sigmoid_focal", focal_alpha=0.25, focal_gamma=2.0
            )
        )

    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.weighted_classification_loss(logits, targets, weights, loss_type="sigmoid_focal")
    gradient = tape.gradient(loss, logits).numpy()
    values = logits.numpy()
    numeric = np.zeros_like(values)
    step = 1e-2
    for index in np.ndindex(values.shape):
        up, down = values.copy(), values.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (loss_of(up) - loss_of(down)) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, atol=2e-4)


def test_focal_with_gamma_zero_is_alpha_scaled_binary_cross_entropy():
    logits, targets = _batch(seed=5)
    focal = losses.weighted_classification_loss(
        logits, targets, [1.0] * 4, normalization="mean", loss_type="sigmoid_focal", focal_alpha=0.5, focal_gamma=0.0
    )
    # Model Garden's binary loss averages over RoIs and the 4 class columns.
    binary = maskrcnn_losses.FastrcnnClassLoss(use_binary_cross_entropy=True)(logits, targets)
    assert float(focal) == pytest.approx(0.5 * 4 * float(binary), rel=1e-5)


def test_focal_down_weights_easy_examples():
    logits = tf.constant([[[8.0, -8.0], [-8.0, 8.0], [0.0, 0.0]]])
    targets = tf.constant([[0.0, 1.0, 1.0]])
    per_roi = [
        float(
            losses.weighted_classification_loss(
                logits[:, i : i + 1], targets[:, i : i + 1], [1.0, 1.0], loss_type="sigmoid_focal"
            )
        )
        for i in range(3)
    ]
    assert per_roi[0] < 1e-6 and per_roi[1] < 1e-6 and per_roi[2] > 0.05


def test_mixed_precision_inputs_give_a_float32_loss():
    logits, targets = _batch(seed=6)
    full = losses.weighted_classification_loss(logits, targets, [1.0, 2.0, 3.0, 4.0])
    for dtype in (tf.float16, tf.bfloat16):
        half = losses.weighted_classification_loss(
            tf.cast(logits, dtype), tf.cast(targets, dtype), [1.0, 2.0, 3.0, 4.0]
        )
        assert half.dtype == tf.float32
        assert float(half) == pytest.approx(float(full), rel=2e-2)


def test_drop_in_class_matches_the_function_and_accepts_model_gardens_third_argument():
    logits, targets = _batch(seed=7)
    loss_fn = losses.WeightedFastrcnnClassLoss([1.0, 2.0, 3.0, 4.0])
    direct = losses.weighted_classification_loss(logits, targets, [1.0, 2.0, 3.0, 4.0])
    assert float(loss_fn(logits, targets)) == pytest.approx(float(direct), rel=1e-7)
    assert float(loss_fn(logits, targets, None)) == pytest.approx(float(direct), rel=1e-7)
    unit = maskrcnn_losses.FastrcnnClassLoss()(logits, targets)
    assert float(loss_fn(logits, targets, [1.0] * 4)) == pytest.approx(float(unit), abs=1e-6)
    with pytest.raises(ValueError, match="class_weights has 3 entries, num_classes is 4"):
        loss_fn(logits, targets, [1.0, 1.0, 1.0])


def test_loss_works_inside_tf_function():
    logits, targets = _batch(seed=8)
    loss_fn = losses.WeightedFastrcnnClassLoss([1.0, 2.0, 3.0, 4.0], loss_type="sigmoid_focal")
    eager = float(loss_fn(logits, targets))
    assert float(tf.function(loss_fn)(logits, targets)) == pytest.approx(eager, rel=1e-6)
