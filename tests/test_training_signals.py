"""Collapse signals on hand-made RoI batches."""

import numpy as np
import pytest
import tensorflow as tf

from tfmaskrcnn.diagnostics import training_signals


def _logits_predicting(predicted, num_classes=4):
    """[1, R, C] logits whose arg-max is `predicted`."""
    return tf.constant(np.eye(num_classes, dtype=np.float32)[predicted][None] * 5.0)


# 8 RoIs: 3 background, 5 foreground (targets 1, 1, 2, 3, 3).
TARGETS = tf.constant([[0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 3.0]])


def test_signals_of_a_mixed_batch():
    # Predictions on the foreground RoIs: 1 (right), 0 (missed), 1 (wrong), 3 (right), 1 (wrong).
    logits = _logits_predicting([0, 2, 0, 1, 0, 1, 3, 1])
    signals = training_signals.collapse_signals(logits, TARGETS)
    assert float(signals["foreground_accuracy"]) == pytest.approx(2 / 5)
    assert float(signals["foreground_as_background"]) == pytest.approx(1 / 5)
    np.testing.assert_array_equal(signals["predicted_class_histogram"].numpy(), [1, 3, 0, 1])
    np.testing.assert_array_equal(signals["target_class_histogram"].numpy(), [0, 2, 1, 2])
    assert float(signals["top_class_share"]) == pytest.approx(3 / 4)
    assert float(signals["num_foreground"]) == 5.0


def test_a_collapsed_head_is_visible():
    logits = _logits_predicting([2] * 8)
    signals = training_signals.collapse_signals(logits, TARGETS)
    assert float(signals["top_class_share"]) == 1.0
    assert float(signals["foreground_accuracy"]) == pytest.approx(1 / 5)
    np.testing.assert_array_equal(signals["predicted_class_histogram"].numpy(), [0, 0, 5, 0])


def test_batch_without_foreground_gives_zeros_not_nan():
    logits = _logits_predicting([1, 0, 0])
    targets = tf.zeros([1, 3])
    signals = training_signals.collapse_signals(logits, targets)
    for name in ("foreground_accuracy", "foreground_as_background", "top_class_share", "num_foreground"):
        assert float(signals[name]) == 0.0
    assert signals["predicted_class_histogram"].shape == (4,)


def test_works_in_a_tf_function_with_half_precision_logits():
    logits = tf.cast(_logits_predicting([0, 2, 0, 1, 0, 1, 3, 1]), tf.bfloat16)
    signals = tf.function(training_signals.collapse_signals)(logits, TARGETS)
    assert float(signals["foreground_accuracy"]) == pytest.approx(2 / 5)
    np.testing.assert_array_equal(signals["predicted_class_histogram"].numpy(), [1, 3, 0, 1])
