"""The task wires our additions into Model Garden's training: each test fails if one is bypassed.

- the box head's classification loss is the weighted one (compared with Model Garden's stock
  loss and with `weighted_classification_loss` alone, on known outputs);
- the image sampler is in the stream `build_inputs` returns (class frequencies change);
- the augmentation preset's augmenter is in the parser of that stream.
No model is built; the stream tests parse a few dozen 128x128 images.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfmaskrcnn.tasks import config_resolution as experiment


def _task(params):
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    experiment.resolve_config(params.task)
    return TfMaskRCNNTask(params.task)


# ------------------------------------------------------------------------ loss


def _known_outputs(num_classes: int = 4, batch: int = 2, rois: int = 16, seed: int = 0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, (batch, rois))
    targets[0, :3] = 1  # class 1 is certainly present
    return {
        "class_outputs": tf.constant(rng.normal(0, 2, (batch, rois, num_classes)), tf.float32),
        "class_targets": tf.constant(targets, tf.int32),
        "box_outputs": tf.constant(rng.normal(0, 1, (batch, rois, num_classes * 4)), tf.float32),
        "box_targets": tf.constant(rng.normal(0, 1, (batch, rois, 4)), tf.float32),
    }


def _stock_losses(outputs, task_config):
    import tensorflow as tf
    from official.vision.losses import maskrcnn_losses

    cls = tf.reduce_mean(maskrcnn_losses.FastrcnnClassLoss()(outputs["class_outputs"], outputs["class_targets"]))
    box = tf.reduce_mean(
        maskrcnn_losses.FastrcnnBoxLoss(
            task_config.losses.frcnn_huber_loss_delta, task_config.model.detection_head.class_agnostic_bbox_pred
        )(outputs["box_outputs"], outputs["class_targets"], outputs["box_targets"])
    )
    return float(cls), float(box)


@pytest.mark.parametrize("normalization", ["weight_sum", "mean"])
def test_task_classification_loss_is_the_weighted_one(shapes_records, tiny_experiment, normalization):
    from tfmaskrcnn.losses import weighted_classification_loss

    outputs = _known_outputs()
    losses = {}
    for name, weights in (("ones", [1.0, 1.0, 1.0, 1.0]), ("heavy", [1.0, 100.0, 1.0, 1.0])):
        params = tiny_experiment(shapes_records)
        params.task.class_balance.weighting.scheme = "explicit"
        params.task.class_balance.weighting.weights = weights
        params.task.class_balance.normalization = normalization
        task = _task(params)
        assert list(task.task_config.class_balance.weighting.weights) == weights
        cls_loss, box_loss = task._build_frcnn_losses(outputs, {})  # pylint: disable=protected-access
        losses[name] = (float(cls_loss), float(box_loss))
        alone = weighted_classification_loss(
            outputs["class_outputs"], outputs["class_targets"], weights, normalization=normalization
        )
        np.testing.assert_allclose(losses[name][0], float(alone), rtol=1e-6, err_msg=name)

    stock_cls, stock_box = _stock_losses(outputs, params.task)
    np.testing.assert_allclose(losses["ones"][0], stock_cls, rtol=1e-6)  # all ones: Model Garden's loss
    assert abs(losses["heavy"][0] - stock_cls) > 0.05 * stock_cls, "the class weights did not reach the loss"
    for name in losses:  # the box loss is Model Garden's, untouched
        np.testing.assert_allclose(losses[name][1], stock_box, rtol=1e-6, err_msg=name)


# ---------------------------------------------------------------- input stream


@pytest.fixture(scope="module")
def imbalanced_records(tmp_path_factory) -> dict:
    """Shapes with one rare class (ratios 12:2:1), converted like real data."""
    from conftest import make_shapes_records

    return make_shapes_records(
        tmp_path_factory.mktemp("imbalanced"), num_train=48, num_val=4, class_ratios=(12, 2, 1), seed=5, max_objects=3
    )


def _instance_shares(task, data_config, num_batches: int = 48) -> np.ndarray:
    """Share of each class (1..K) among the ground-truth instances of the training stream
    (48 batches of 2: two passes over the 48 training images)."""
    counts = np.zeros(4)
    for _, labels in task.build_inputs(data_config).take(num_batches):
        classes = labels["gt_classes"].numpy().ravel()
        counts += np.bincount(classes[classes > 0], minlength=4)[:4]
    return counts[1:] / counts[1:].sum()


def _stream_params(tiny_experiment, records, sampling: str):
    params = tiny_experiment(records)
    params.task.train_data.seed = 3
    params.task.train_data.sampling.type = sampling
    params.task.train_data.sampling.seed = 3
    params.task.train_data.parser.aug_scale_min = 1.0  # no crop: every instance stays countable
    params.task.train_data.parser.aug_scale_max = 1.0
    return params


@pytest.mark.parametrize("sampling", ["class_aware", "repeat_factor"])
def test_the_sampler_is_in_the_stream_the_task_builds(imbalanced_records, tiny_experiment, sampling):
    stock_params = _stream_params(tiny_experiment, imbalanced_records, "none")
    stock = _instance_shares(_task(stock_params), stock_params.task.train_data)
    params = _stream_params(tiny_experiment, imbalanced_records, sampling)
    if sampling == "repeat_factor":
        params.task.train_data.sampling.threshold = 0.9  # strong: the rare class's images come ~2.5 times
    sampled = _instance_shares(_task(params), params.task.train_data)
    assert stock[0] > 0.7, f"the fixture should have one frequent class: {stock}"
    # Both samplers draw images of the two rarer classes more often (seeds fixed: deterministic).
    rare, stock_rare = sampled[1:].sum(), stock[1:].sum()
    assert rare > stock_rare + 0.05, f"{sampling}: rarer classes' share {rare:.3f}, stock {stock_rare:.3f}"


def test_the_augmentation_preset_is_in_the_parser_of_the_training_stream(shapes_records, tiny_experiment, monkeypatch):
    from tfmaskrcnn.augment import presets

    built = []

    def spying_build_augmenter(config, **kwargs):
        augmenter = real_build(config, **kwargs)
        if augmenter is None:
            return None

        def spy(*args, **kw):
            built.append("traced into the input pipeline")
            return augmenter(*args, **kw)

        return spy

    real_build = presets.build_augmenter
    monkeypatch.setattr(presets, "build_augmenter", spying_build_augmenter)
    params = tiny_experiment(shapes_records)
    params.task.train_data.parser.augmentation.preset = "standard"
    task = _task(params)
    assert task._build_parser(params.task.train_data)._example_augmenter is not None  # pylint: disable=protected-access
    assert task._build_parser(params.task.validation_data)._example_augmenter is None  # pylint: disable=protected-access
    built.clear()
    next(iter(task.build_inputs(params.task.train_data)))
    assert built, "the augmenter was built but not called by the training stream"

    params.task.train_data.parser.augmentation.preset = "none"
    assert task._build_parser(params.task.train_data)._example_augmenter is None  # pylint: disable=protected-access
