"""Fine-tuning from a checkpoint of other classes (issue 12 items 1-2), on tiny real models (slow).

A model is pretrained a few steps on four shapes the demo data does not have (hexagon, cross,
ellipse, arrow: 5 outputs with background), then initializes the 3-class demo model (4 outputs):
the class-dependent layers are re-initialized, everything else is restored with the checkpoint's
exact values. With the same class count everything is restored; an unrelated checkpoint or one
without the requested heads stops with a clear error.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PRETRAIN_CLASSES = ("hexagon", "cross", "ellipse", "arrow")
CLASS_LAYERS = {"detection-scores", "detection-boxes", "mask-logits"}


@pytest.fixture(scope="module")
def pretrain_records(tmp_path_factory) -> dict:
    from tfmaskrcnn.data.shapes.records import write_shapes_records

    root = tmp_path_factory.mktemp("pretrain_shapes")
    records = write_shapes_records(root, num_train=12, num_val=4, seed=7, classes=PRETRAIN_CLASSES)
    label_map = json.loads((root / "records" / "train" / "label_map.json").read_text())
    assert [c["name"] for c in label_map["classes"]] == list(PRETRAIN_CLASSES)
    return records


@pytest.fixture(scope="module")
def pretrained_dir(pretrain_records, tiny_experiment, tmp_path_factory) -> str:
    from tfmaskrcnn.cli import train

    model_dir = str(tmp_path_factory.mktemp("pretrained") / "run")
    params = tiny_experiment(pretrain_records, train_steps=2)
    train.run(params, model_dir, "train")
    assert params.task.model.num_classes == 5
    return model_dir


@pytest.fixture(scope="module")
def demo_task_and_model(tiny_task_and_model):
    """The 3-class demo model: the session's tiny task and model (conftest.py). initialize is called
    on it by several tests; none depends on the weights it had before."""
    return tiny_task_and_model


def _variables_by_name(model) -> dict:
    return {v.name: v for v in model.variables}


def _assert_restored_equal(report, model, checkpoint: str) -> None:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    variables = _variables_by_name(model)
    for entry in report.restored:
        expected = reader.get_tensor(entry["checkpoint_key"])
        np.testing.assert_array_equal(variables[entry["variable"]].numpy(), expected, err_msg=entry["variable"])


def test_finetune_on_other_classes_reinitializes_only_the_class_layers(
    pretrained_dir, shapes_records, tiny_experiment, tmp_path
):
    import tensorflow as tf

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.tasks.checkpoint_init import REPORT_FILENAME

    model_dir = str(tmp_path / "finetuned")
    params = tiny_experiment(shapes_records, train_steps=1)
    params.task.init_checkpoint = pretrained_dir  # a model dir: its latest checkpoint
    params.task.init_checkpoint_modules = "all"
    train.run(params, model_dir, "train")

    with open(os.path.join(model_dir, REPORT_FILENAME)) as f:
        report = json.load(f)
    assert report["checkpoint"].endswith("ckpt-2")
    reinitialized = {entry["layer"] for entry in report["reinitialized"]}
    assert reinitialized == CLASS_LAYERS, report["reinitialized"]
    shapes = {(e["layer"], tuple(e["checkpoint_shape"]), tuple(e["shape"])) for e in report["reinitialized"]}
    assert ("detection-scores", (256, 5), (256, 4)) in shapes  # background + 4 -> background + 3
    assert ("detection-boxes", (256, 20), (256, 16)) in shapes
    assert ("mask-logits", (1, 1, 64, 5), (1, 1, 64, 4)) in shapes
    assert report["missing"] == [] and report["not_requested"] == []
    modules = {entry["module"] for entry in report["restored"]}
    assert {"backbone", "decoder", "rpn_head", "detection_head", "mask_head"} <= modules
    assert len(report["restored"]) > 100

    # The run resumes from its own checkpoint: initialize (and init_checkpoint) is not used again,
    # so an init checkpoint that would fail now does not matter.
    bogus = tf.train.Checkpoint(unrelated=tf.Variable([1.0, 2.0])).save(str(tmp_path / "bogus" / "ckpt"))
    params = tiny_experiment(shapes_records, train_steps=2)
    params.task.init_checkpoint = bogus
    train.run(params, model_dir, "train")
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


def test_restored_variables_equal_the_checkpoint(pretrained_dir, demo_task_and_model):
    import tensorflow as tf

    from tfmaskrcnn.tasks import checkpoint_init

    _, _, model = demo_task_and_model
    checkpoint = tf.train.latest_checkpoint(pretrained_dir)
    report = checkpoint_init.initialize_from_checkpoint(model, checkpoint, "all")
    assert {e["layer"] for e in report.reinitialized} == CLASS_LAYERS
    _assert_restored_equal(report, model, checkpoint)
    # Every model variable is accounted for: restored or re-initialized.
    assert len(report.restored) + len(report.reinitialized) == len({v.ref() for v in model.variables})


def test_same_class_count_restores_the_class_head_too(demo_task_and_model, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.tasks import checkpoint_init

    _, _, model = demo_task_and_model
    # A 3-class checkpoint of this very architecture, with values unlike the model's.
    source = tf.train.Checkpoint(model=model, **model.checkpoint_items)
    originals = [v.numpy() for v in model.variables]
    for variable in model.variables:
        variable.assign(variable + tf.cast(0.5, variable.dtype))
    checkpoint = source.save(str(tmp_path / "same" / "ckpt"))
    for variable, value in zip(model.variables, originals):
        variable.assign(value)
    report = checkpoint_init.initialize_from_checkpoint(model, checkpoint, "all", report_dir=str(tmp_path))
    assert report.reinitialized == [] and report.missing == []
    restored_layers = {e["variable"].split("/")[-2] for e in report.restored}
    assert CLASS_LAYERS <= restored_layers
    _assert_restored_equal(report, model, checkpoint)
    assert os.path.exists(tmp_path / checkpoint_init.REPORT_FILENAME)


def test_unrelated_or_incomplete_checkpoints_stop_with_a_clear_error(demo_task_and_model, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.tasks import checkpoint_init

    _, _, model = demo_task_and_model
    unrelated = tf.train.Checkpoint(head=tf.Variable(tf.zeros([3, 3]))).save(str(tmp_path / "unrelated2" / "ckpt"))
    with pytest.raises(checkpoint_init.InitCheckpointError, match="holds none of this model's variables"):
        checkpoint_init.initialize_from_checkpoint(model, unrelated, "all")

    # A backbone-only checkpoint (the layout of Model Garden's ImageNet checkpoints): fine for
    # init_checkpoint_modules=backbone, an error naming the missing heads for `all`.
    backbone_only = tf.train.Checkpoint(backbone=model.backbone).save(str(tmp_path / "backbone" / "ckpt"))
    with pytest.raises(checkpoint_init.InitCheckpointError, match=r"lacks the .*decoder.*backbone"):
        checkpoint_init.initialize_from_checkpoint(model, backbone_only, "all")
    report = checkpoint_init.initialize_from_checkpoint(model, backbone_only, "backbone")
    assert {e["module"] for e in report.restored} == {"backbone"}
    assert report.not_requested and not report.reinitialized

    with pytest.raises(checkpoint_init.InitCheckpointError, match="no .*index"):
        checkpoint_init.initialize_from_checkpoint(model, str(tmp_path / "nothing" / "ckpt-1"), "all")
