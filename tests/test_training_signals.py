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


@pytest.mark.slow
def test_a_real_train_step_logs_the_share_of_the_class_the_head_over_predicts(tiny_task_and_model):
    """The metrics training adds (fg_accuracy, fg_predicted_background, fg_predicted_share/<class>),
    from the task's own train_step on a shapes batch, with the class-logit bias set so that the
    head predicts one class (or background) for every RoI. Learning rate 0 and one seed: every
    step samples the same RoIs, so the fg_accuracy of the three single-class heads adds up to 1."""
    import tf_keras

    from tfmaskrcnn.serving.calibration import class_logit_layers

    params, task, model = tiny_task_and_model
    names = task.label_map.names
    batch = next(iter(task.build_inputs(params.task.train_data)))
    optimizer = tf_keras.optimizers.SGD(learning_rate=0.0)

    def logs_of_a_step():
        metrics = task.build_metrics(training=True)
        tf_keras.utils.set_random_seed(7)
        task.train_step(batch, model, optimizer, metrics=metrics)
        return {m.name: float(m.result()) for m in metrics}

    logs_of_a_step()  # Keras creates the heads' weights on the first call
    (classifier,) = class_logit_layers(model)
    trained_bias = classifier.bias.numpy()
    accuracy = {}
    try:
        for favoured in range(len(names) + 1):  # 0: background
            classifier.bias.assign(trained_bias + 100.0 * np.eye(len(trained_bias), dtype=np.float32)[favoured])
            logs = logs_of_a_step()
            for class_id, name in enumerate(names, start=1):
                share = logs[f"fg_predicted_share/{name}"]
                assert share == (1.0 if class_id == favoured else 0.0), (favoured, name, logs)
            assert logs["fg_predicted_background"] == (1.0 if favoured == 0 else 0.0), (favoured, logs)
            accuracy[favoured] = logs["fg_accuracy"]
    finally:
        classifier.bias.assign(trained_bias)
    assert accuracy[0] == 0.0
    # Each foreground RoI has one target class: its single-class head is right, the others wrong.
    assert sum(accuracy[c] for c in range(1, len(names) + 1)) == pytest.approx(1.0, abs=1e-6), accuracy
