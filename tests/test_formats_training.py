"""Training on imported records with 30% negative images (tiny model, marked slow)."""

from __future__ import annotations

import json
import os

import pytest
from format_exports import make_dataset, write_yolo

from tfmaskrcnn.cli import main as cli_main
from tfmaskrcnn.cli import train

pytestmark = pytest.mark.slow


def test_tiny_training_on_yolo_records_with_30_percent_negatives(tiny_experiment, tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo", make_dataset(num_images=10, num_negative=3))
    output = tmp_path / "records"
    argv = ["convert", "--annotations", str(data_yaml), "--split", "train", "--output", str(output), "--no-progress"]
    assert cli_main(argv) == 0
    stats = json.loads((output / "dataset_stats.json").read_text())
    assert (stats["num_images"], stats["images_without_instances"]) == (10, 3)

    records = {"train": str(output / "*.tfrecord"), "val": str(output / "*.tfrecord")}
    # 5 steps of batch 2 read the 10 images once: every negative goes through the parser and the loss.
    params = tiny_experiment(records, train_steps=5)
    model_dir = str(tmp_path / "run")
    train.run(params, model_dir, "train")
    assert params.task.model.num_classes == 4  # background + cat, dog, bird from the YOLO names
    assert any(name.startswith("ckpt-5") for name in os.listdir(model_dir))
