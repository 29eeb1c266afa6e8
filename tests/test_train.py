"""Tiny-model training through the real Model Garden trainer (marked slow)."""

import os

import pytest

from tfmaskrcnn.cli import train

pytestmark = pytest.mark.slow


def test_two_steps_train_write_the_model_dir_and_resume(tiny_run_dir, shapes_records, tiny_experiment, tmp_path):
    from conftest import copy_run

    # The session's 2-step run (tiny_experiment on shapes_records), copied: this test trains it further.
    model_dir = copy_run(tiny_run_dir, tmp_path / "run")
    files = set(os.listdir(model_dir))
    assert {"params.yaml", "class_balance.md", "checkpoint"} <= files
    assert any(name.startswith("ckpt-2") for name in files)
    params_text = open(os.path.join(model_dir, "params.yaml")).read()
    assert "num_classes: 4" in params_text and "label_map.json" in params_text

    # The same model dir with a larger budget resumes from step 2 instead of starting over.
    train.run(tiny_experiment(shapes_records, train_steps=3), model_dir, "train")
    assert any(name.startswith("ckpt-3") for name in os.listdir(model_dir))
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(model_dir, "ckpt-3"))
    assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 3


def test_weighted_and_sampled_training_runs(shapes_records, tiny_experiment, tmp_path):
    params = tiny_experiment(shapes_records, train_steps=2)
    params.task.class_balance.weighting.scheme = "sqrt_inverse"
    params.task.train_data.sampling.type = "repeat_factor"
    params.task.train_data.parser.augmentation.preset = "standard"
    model_dir = tmp_path / "run"
    _, logs = train.run(params, str(model_dir), "train", post_eval=True)
    assert "mask_AP/triangle" in logs and "bbox_AP/square" in logs

    # The run trained with the sqrt-inverse weights of these records' instance counts (background 1,
    # n_c * w_c averaging 1) and the repeat-factor threshold, as params.yaml and class_balance.md record.
    import numpy as np
    import yaml

    from tfmaskrcnn.data.records import decoded_examples

    counts = np.zeros(3)
    for _, _, example in decoded_examples(shapes_records["train"], include_mask=False):
        np.add.at(counts, example["groundtruth_classes"] - 1, 1)
    raw = 1.0 / np.sqrt(counts)
    expected = [1.0, *(raw * counts.sum() / (counts * raw).sum())]
    recorded = yaml.safe_load((model_dir / "params.yaml").read_text())["task"]
    np.testing.assert_allclose(recorded["class_balance"]["weighting"]["weights"], expected, rtol=1e-6)
    assert not np.allclose(expected, 1.0)  # the counts differ, so the weights do
    threshold = recorded["train_data"]["sampling"]["threshold"]
    assert recorded["train_data"]["sampling"]["type"] == "repeat_factor" and threshold > 0
    report = (model_dir / "class_balance.md").read_text()
    assert (
        "weighting scheme: sqrt_inverse" in report and f"sampling: repeat_factor, threshold {threshold:.4g}" in report
    )


def test_two_steps_on_real_coco_photos(coco_tiny_dir, tiny_experiment, tmp_path):
    from tfmaskrcnn.data import convert

    records = {}
    for split in ("train", "val"):
        out = tmp_path / split
        convert.convert_coco(
            str(coco_tiny_dir / "annotations" / f"instances_{split}2017.json"),
            str(coco_tiny_dir / f"{split}2017"),
            str(out),
            num_shards=1,
            progress=False,
        )
        records[split] = str(out / "*.tfrecord")
    params = tiny_experiment(records, train_steps=2)
    model_dir = str(tmp_path / "run")
    train.run(params, model_dir, "train")
    assert params.task.model.num_classes == 81
    assert any(name.startswith("ckpt-2") for name in os.listdir(model_dir))
