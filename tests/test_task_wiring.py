"""The task wires our additions into Model Garden's training: each test fails if one is bypassed.

- the box head's classification loss is the weighted one (compared with Model Garden's stock
  loss and with `weighted_classification_loss` alone, on known outputs);
- the image sampler is in the stream `build_inputs` returns (class frequencies change);
- the augmentation preset's augmenter is in the parser of that stream;
- a Model Garden that no longer has or calls a hooked private method (`model_garden_hooks`) is
  refused when the task is built, and at the first train step / evaluation set-up when the
  override was not reached (simulated by patching Model Garden's base class).
Only the train_step test (slow) builds a model; the stream tests parse a few dozen 128x128 images.
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


def _stream_counts(task, data_config, num_batches: int = 48) -> dict:
    """Counted on the batches `build_inputs` produces: ground-truth instances per image, the class
    shares among them, and the share of images that are gray (R = G = B inside the image, after
    undoing Model Garden's normalization)."""
    from official.vision.ops import preprocess_ops

    mean, std = np.array(preprocess_ops.MEAN_NORM), np.array(preprocess_ops.STDDEV_NORM)
    counts, images, gray = np.zeros(4), 0, 0
    for features, labels in task.build_inputs(data_config).take(num_batches):
        classes = labels["gt_classes"].numpy().ravel()
        counts += np.bincount(classes[classes > 0], minlength=4)[:4]
        sizes = labels["image_info"].numpy()[:, 1].astype(int)  # the image inside the padded input
        for image, (height, width) in zip(features.numpy(), sizes):
            rgb = image[:height, :width] * std + mean
            gray += int(np.ptp(rgb, axis=-1).max() < 1e-3)
            images += 1
    return {"per_image": counts[1:].sum() / images, "shares": counts[1:] / counts[1:].sum(), "gray": gray / images}


def _levers(params, copy_paste: bool = True, sampling: bool = False):
    """Augmentation (every image to gray: countable), copy-paste (up to 1 pasted instance per image,
    classes drawn uniformly; more would fill the images to max_num_instances) and/or sampling."""
    data = params.task.train_data
    data.parser.augmentation.grayscale_prob = 1.0
    data.parser.augmentation.seed = 3
    data.parser.copy_paste.enabled = copy_paste
    data.parser.copy_paste.class_sampling = "uniform"
    data.parser.copy_paste.max_instances = 1
    data.parser.copy_paste.seed = 3
    if sampling:
        data.sampling.type = "repeat_factor"
        data.sampling.threshold = 0.9  # strong: the rare class's images come ~2.5 times
    return params


def test_build_inputs_applies_augmentation_copy_paste_and_sampling_counted_on_the_batches(
    imbalanced_records, tiny_experiment, monkeypatch
):
    """Through the task's public `build_inputs`, counted on the batches it produces: augmentation turns
    every image gray; copy-paste adds instances (of every class alike, so the rarer classes' share
    grows); sampling draws the rarer classes' images more often. Then a Model Garden whose parser no
    longer calls `_parse_train_data` (the override that runs augmentation and copy-paste) is refused
    when the task is built, and a task built before that "upgrade" produces stock batches, which
    these counts tell apart. (Copy-paste and sampling are measured apart: pasting dilutes the
    sampler's share change below what two passes over 48 images resolve.)"""
    from official.vision.dataloaders import maskrcnn_input
    from official.vision.dataloaders import parser as mg_parser

    from tfmaskrcnn.tasks import model_garden_hooks

    def params(**levers):
        made = _stream_params(tiny_experiment, imbalanced_records, "none")
        return _levers(made, **levers) if levers else made

    stock_params = params()
    stock = _stream_counts(_task(stock_params), stock_params.task.train_data)
    pasted_params = params(copy_paste=True)
    pasted_task = _task(pasted_params)
    pasted = _stream_counts(pasted_task, pasted_params.task.train_data)
    sampled_params = params(copy_paste=False, sampling=True)
    sampled = _stream_counts(_task(sampled_params), sampled_params.task.train_data)

    assert stock["gray"] == 0.0 and pasted["gray"] == 1.0 and sampled["gray"] == 1.0, (stock, pasted, sampled)
    assert pasted["per_image"] > stock["per_image"] + 0.3, (stock, pasted)  # pasted instances
    assert pasted["shares"][1:].sum() > stock["shares"][1:].sum() + 0.05, (stock, pasted)  # uniform pastes
    assert sampled["shares"][1:].sum() > stock["shares"][1:].sum() + 0.05, (stock, sampled)  # images drawn

    def parse_fn_of_an_upgrade(self, is_training):  # the train parse inlined: the override is bypassed
        def parse(decoded):
            if is_training:
                return maskrcnn_input.Parser._parse_train_data(self, decoded)  # noqa: SLF001
            return self._parse_eval_data(decoded)  # pylint: disable=protected-access

        return parse

    monkeypatch.setattr(mg_parser.Parser, "parse_fn", parse_fn_of_an_upgrade)
    with pytest.raises(model_garden_hooks.ModelGardenHookError, match=r"no longer calls self._parse_train_data\(\)"):
        _task(params(copy_paste=True))
    bypassed = _stream_counts(pasted_task, pasted_params.task.train_data)
    assert bypassed["gray"] == 0.0 and bypassed["per_image"] == pytest.approx(stock["per_image"]), bypassed


# ------------------------------------------------- Model Garden upgrade guards


def _build_losses_of_an_upgrade(self, outputs, labels, aux_losses=None):
    """Model Garden's build_losses as a release might write it: the Fast R-CNN losses computed
    inline (here: Model Garden's own method called by class), so the task's override is bypassed."""
    import tensorflow as tf
    from official.vision.tasks import maskrcnn as mg_task

    rpn_score, rpn_box = self._build_rpn_losses(outputs, labels)
    frcnn_cls, frcnn_box = mg_task.MaskRCNNTask._build_frcnn_losses(self, outputs, labels)  # noqa: SLF001
    mask = self._build_mask_loss(outputs)
    total = rpn_score + rpn_box + frcnn_cls + frcnn_box + mask
    if aux_losses:
        total += tf.reduce_sum(aux_losses)
    return {
        "total_loss": total,
        "rpn_score_loss": rpn_score,
        "rpn_box_loss": rpn_box,
        "frcnn_cls_loss": frcnn_cls,
        "frcnn_box_loss": frcnn_box,
        "mask_loss": mask,
        "model_loss": total,
    }


def test_the_installed_model_garden_has_every_hooked_method():
    from tfmaskrcnn.tasks import model_garden_hooks

    model_garden_hooks.check_hooks()  # raises on the installed version if a hook no longer fits
    assert {h.method for h in model_garden_hooks.HOOKS} >= {"_build_frcnn_losses", "_build_coco_metrics"}


@pytest.mark.parametrize("change", ["not_called", "renamed", "new_signature"])
def test_building_the_task_refuses_a_model_garden_that_bypasses_the_loss_override(
    shapes_records, tiny_experiment, monkeypatch, change
):
    from official.vision.tasks import maskrcnn as mg_task

    from tfmaskrcnn.tasks import model_garden_hooks

    if change == "not_called":
        monkeypatch.setattr(mg_task.MaskRCNNTask, "build_losses", _build_losses_of_an_upgrade)
        expected = "no longer calls self._build_frcnn_losses()"
    elif change == "renamed":
        monkeypatch.delattr(mg_task.MaskRCNNTask, "_build_frcnn_losses")
        expected = "_build_frcnn_losses no longer exists"
    else:
        monkeypatch.setattr(
            mg_task.MaskRCNNTask, "_build_frcnn_losses", lambda self, outputs, labels, head_index: (0.0, 0.0)
        )
        expected = "now takes (self, outputs, labels, head_index)"
    with pytest.raises(model_garden_hooks.ModelGardenHookError) as raised:
        _task(tiny_experiment(shapes_records))
    message = str(raised.value)
    assert expected in message
    assert model_garden_hooks.model_garden_version() in message  # the installed version
    assert "tf-models-official~=2.20.0" in message and "class weights" in message  # the fix, what is lost


def _one_batch(task, params):
    return next(iter(task.build_inputs(params.task.train_data)))


@pytest.mark.slow
def test_train_step_applies_the_class_weights_and_fails_when_the_override_is_bypassed(
    shapes_records, tiny_experiment, monkeypatch
):
    """Through public entry points only: the registered experiment's task and model, `train_step` on a
    batch. Weights of 2 for every class with `mean` normalization double the classification loss
    and leave the others (same model, same RoI draws, learning rate 0); then a Model Garden whose
    build_losses no longer calls the override makes the first train step fail."""
    import tf_keras
    from official.vision.tasks import maskrcnn as mg_task

    from tfmaskrcnn.tasks import model_garden_hooks

    stock_params = tiny_experiment(shapes_records)
    stock = _task(stock_params)
    weighted_params = tiny_experiment(shapes_records)
    weighted_params.task.class_balance.weighting.scheme = "explicit"
    weighted_params.task.class_balance.weighting.weights = [2.0, 2.0, 2.0, 2.0]
    weighted_params.task.class_balance.normalization = "mean"
    weighted = _task(weighted_params)
    model = stock.build_model()
    batch = _one_batch(stock, stock_params)
    optimizer = tf_keras.optimizers.SGD(learning_rate=0.0)

    logs = {}
    for name, task in (("stock", stock), ("weighted", weighted)):
        metrics = task.build_metrics(training=True)
        tf_keras.utils.set_random_seed(7)
        task.train_step(batch, model, optimizer, metrics=metrics)
        logs[name] = {m.name: float(m.result()) for m in metrics}
    np.testing.assert_allclose(logs["weighted"]["frcnn_cls_loss"], 2 * logs["stock"]["frcnn_cls_loss"], rtol=1e-5)
    for key in ("rpn_score_loss", "rpn_box_loss", "frcnn_box_loss", "mask_loss"):
        np.testing.assert_allclose(logs["weighted"][key], logs["stock"][key], rtol=1e-5, err_msg=key)

    monkeypatch.setattr(mg_task.MaskRCNNTask, "build_losses", _build_losses_of_an_upgrade)
    bypassed = weighted  # built before the "upgrade": the build-time check passed
    bypassed.hook_calls = model_garden_hooks.HookCalls()  # a fresh process: nothing traced yet
    with pytest.raises(model_garden_hooks.ModelGardenHookError, match="did not call _build_frcnn_losses"):
        bypassed.train_step(batch, model, optimizer, metrics=bypassed.build_metrics(training=True))


def test_evaluation_metrics_are_the_per_class_evaluator_and_refuse_a_bypass(
    shapes_records, tiny_experiment, monkeypatch, tmp_path
):
    from official.vision.evaluation import coco_evaluator
    from official.vision.tasks import maskrcnn as mg_task

    from tfmaskrcnn.evaluation.model_garden import ModelGardenEvaluator
    from tfmaskrcnn.tasks import model_garden_hooks
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    params = tiny_experiment(shapes_records)
    experiment.resolve_config(params.task)
    task = TfMaskRCNNTask(params.task, logging_dir=str(tmp_path))
    task.build_metrics(training=False)
    assert isinstance(task.coco_metric, ModelGardenEvaluator)  # per-class AP, confusion and the alarm

    def build_metrics_of_an_upgrade(self, training=True):  # builds its evaluator inline
        self.coco_metric = coco_evaluator.COCOEvaluator(annotation_file=None, include_mask=True)
        return []

    monkeypatch.setattr(mg_task.MaskRCNNTask, "build_metrics", build_metrics_of_an_upgrade)
    task.hook_calls = model_garden_hooks.HookCalls()
    with pytest.raises(model_garden_hooks.ModelGardenHookError, match="did not call _build_coco_metrics"):
        task.build_metrics(training=False)
