"""Decoupled classifier re-training (cRT): config checks, which variables train, and a two-stage run.

The slow test trains a first stage for one step, then a cRT stage for a few steps from it, and
compares every model variable of the two checkpoints: only the class-logit layer may change
(batch-norm moving statistics included in the comparison).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfmaskrcnn.configs import maskrcnn as configs
from tfmaskrcnn.tasks import classifier_retraining as crt


def _task_config(**retraining):
    task = configs.TfMaskRCNNTask()
    task.classifier_retraining = configs.ClassifierRetraining(**retraining)
    return task


def test_disabled_without_a_checkpoint():
    task = _task_config(steps=10, trainable="nonsense")
    crt.check_config(task)  # not enabled: nothing checked
    assert not crt.enabled(task.classifier_retraining)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"trainable": "backbone"}, "use `logits`"),
        ({"sampling": "balanced"}, "use one of none, repeat_factor, class_aware"),
        ({"sampling": "repeat_factor"}, "train_data.sampling.type: repeat_factor"),
        ({"steps": -1}, "number of re-training steps"),
    ],
)
def test_config_errors_name_the_fix(fields, message):
    task = _task_config(init_checkpoint="runs/x", **fields)
    with pytest.raises(ValueError, match=message):
        crt.check_config(task)


def test_init_checkpoint_and_retraining_checkpoint_are_exclusive():
    task = _task_config(init_checkpoint="runs/x")
    task.init_checkpoint = "runs/y"
    with pytest.raises(ValueError, match="clear task.init_checkpoint"):
        crt.check_config(task)


def test_start_line_says_whether_the_classifier_is_reinitialized():
    from tfmaskrcnn.tasks import config_resolution

    task = _task_config(init_checkpoint="runs/x")
    task.model.num_classes = 4
    assert task.classifier_retraining.reinitialize_classifier  # the paper's cRT by default
    notes = config_resolution.start_notes(task)
    assert "classifier re-training from runs/x: class-logit layer re-initialized (cRT" in "\n".join(notes), notes
    task.classifier_retraining.reinitialize_classifier = False
    assert "fine-tuned from the first stage" in "\n".join(config_resolution.start_notes(task))
    assert not any("re-training" in n for n in config_resolution.start_notes(_task_config()))


def test_training_stream_takes_the_retraining_sampling():
    spec = configs.ClassifierRetraining(init_checkpoint="runs/x", sampling="class_aware")
    data = configs.Sampling(type="none", seed=5, shuffle_buffer_size=16)
    train = crt.sampling_spec(spec, data, is_training=True)
    assert (train.type, train.seed, train.shuffle_buffer_size) == ("class_aware", 5, 16)
    assert data.type == "none"  # the config itself is left as it is
    assert crt.sampling_spec(spec, data, is_training=False) is data
    assert crt.sampling_spec(configs.ClassifierRetraining(), data, is_training=True) is data


def test_registered_experiment_ties_steps_to_the_trainer():
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu_crt")
    params.validate()
    assert params.task.classifier_retraining.steps == params.trainer.train_steps
    assert params.task.classifier_retraining.sampling == "class_aware"
    params.override({"trainer": {"train_steps": params.trainer.train_steps + 1}})
    with pytest.raises(KeyError, match="classifier_retraining.steps"):
        params.validate()


def _built_model(records, trainable: str):
    """The tiny model as a cRT task builds it, with its heads' variables created."""
    from conftest import _tiny_experiment
    from official.core import task_factory

    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import config_resolution

    params = _tiny_experiment(records)
    params.task.classifier_retraining = configs.ClassifierRetraining(init_checkpoint="unused", trainable=trainable)
    config_resolution.resolve_config(params.task)
    model = task_factory.get_task(params.task).build_model()
    CheckpointDetector(params, model=model)(np.zeros((64, 64, 3), np.uint8))
    return model


@pytest.mark.slow
def test_only_the_named_layers_are_trainable(shapes_records):
    model = _built_model(shapes_records, "logits")
    names = sorted(v.name.split("/", 2)[-1] for v in model.trainable_variables)
    assert names == ["detection-scores/bias:0", "detection-scores/kernel:0"], names
    model = _built_model(shapes_records, "box_head")
    head = {v.name for v in model.detection_head[0].variables}
    trainable = {v.name for v in model.trainable_variables}
    assert trainable and trainable <= head
    short = {name.split("/", 2)[-1] for name in trainable}
    assert {"detection-boxes/kernel:0", "detection-scores/kernel:0", "detection-fc_1/kernel:0"} <= short, short
    assert not any("bn" in n or "moving" in n or "gamma" in n or "beta" in n for n in short), short


def _model_values(checkpoint_path: str) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint_path)
    # Model Garden's trainer saves the model's variables at the root of the object graph, beside
    # global_step and the optimizer (whose slots hang under each variable).
    not_model = ("optimizer/", "global_step/", "save_counter/", "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not key.startswith(not_model) and ".OPTIMIZER_SLOT" not in key
    }


@pytest.mark.slow
def test_crt_stage_changes_only_the_class_logits(tiny_run_dir, shapes_records, tmp_path):
    import tensorflow as tf
    from conftest import copy_run
    from official.core import exp_factory

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.serving.export import sample_images

    # The first stage: the session's 2-step run of the tiny experiment on shapes_records (a copy).
    first = copy_run(tiny_run_dir, tmp_path / "first")

    steps = 3
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu_crt")
    params.override(
        {
            "task": {
                "train_data": {"input_path": shapes_records["train"], "global_batch_size": 2, "shuffle_buffer_size": 8},
                "validation_data": {"input_path": shapes_records["val"], "global_batch_size": 2},
                "classifier_retraining": {"init_checkpoint": first, "steps": steps},
            },
            "trainer": {"train_steps": steps, "steps_per_loop": 1, "summary_interval": 1, "checkpoint_interval": 1},
        },
        is_strict=True,
    )
    params.validate()
    second = str(tmp_path / "crt")
    train.run(params, second, "train")

    before = _model_values(tf.train.latest_checkpoint(first))
    after = _model_values(tf.train.latest_checkpoint(second))
    assert set(before) == set(after)
    changed = sorted(key for key in before if not np.array_equal(before[key], after[key]))
    assert changed and all(key.startswith("detection_head/0/_classifier/") for key in changed), changed
    assert len(before) > 100 and any("moving_mean" in key for key in before)  # batch-norm statistics were compared too

    # The result is an ordinary checkpoint: the detector restores it (every variable matched).
    detector = CheckpointDetector.from_model_dir(second)
    assert detector(sample_images(seed=1)[0])["scores"].ndim == 1
    assert os.path.exists(os.path.join(second, "params.yaml"))


@pytest.mark.slow
def test_crt_stage_starts_from_a_fresh_classifier_and_the_restored_rest(tiny_run_dir, shapes_records, tmp_path):
    """Kang et al.'s cRT (classifier-balancing's `stage1_weights: false`): after the task's initialize,
    the class-logit layer holds a fresh initialization (Model Garden's N(0, 0.01^2) kernel, zero bias),
    not the first stage's; every other model variable is the first stage's. With
    `reinitialize_classifier: false` the first stage's classifier is kept."""
    import tensorflow as tf
    from conftest import _tiny_experiment
    from official.core import task_factory

    from tfmaskrcnn.tasks import config_resolution

    checkpoint = tf.train.latest_checkpoint(tiny_run_dir)
    first = _model_values(checkpoint)
    classifier = "detection_head/0/_classifier/"
    kernel_key = next(k for k in first if k.startswith(classifier + "kernel"))
    bias_key = next(k for k in first if k.startswith(classifier + "bias"))
    assert np.any(first[bias_key] != 0)  # the first stage moved the bias: a restored one would show

    def initialized(reinitialize: bool):
        params = _tiny_experiment(shapes_records)
        params.task.classifier_retraining = configs.ClassifierRetraining(
            init_checkpoint=tiny_run_dir, steps=2, reinitialize_classifier=reinitialize
        )
        config_resolution.resolve_config(params.task)
        task = task_factory.get_task(params.task, logging_dir=str(tmp_path))
        model = task.build_model()
        task.initialize(model)
        return model

    model = initialized(reinitialize=True)
    head = model.detection_head[0]._classifier  # pylint: disable=protected-access
    kernel, bias = head.kernel.numpy(), head.bias.numpy()
    assert kernel.shape == first[kernel_key].shape
    assert np.all(bias == 0)
    assert not np.allclose(kernel, first[kernel_key])
    assert 0.008 < kernel.std() < 0.012 and abs(kernel.mean()) < 0.003  # N(0, 0.01^2)
    # Everything else is the first stage's: compare through a checkpoint of the initialized model.
    saved = tf.train.Checkpoint(**model.checkpoint_items).write(str(tmp_path / "init" / "ckpt"))
    after = _model_values(saved)
    compared = set(after) & set(first)
    assert len(compared) > 100 and any("moving_mean" in key for key in compared), sorted(after)[:5]
    differ = sorted(k for k in compared if not np.array_equal(after[k], first[k]))
    assert differ == sorted([kernel_key, bias_key]), differ

    model = initialized(reinitialize=False)
    head = model.detection_head[0]._classifier  # pylint: disable=protected-access
    np.testing.assert_array_equal(head.kernel.numpy(), first[kernel_key])
    np.testing.assert_array_equal(head.bias.numpy(), first[bias_key])
