"""A model dir is self-contained: export and inference run after the training data is gone.

Training resolves the config once (label map, num_classes, class weights, sampling threshold,
validation count) and records it in params.yaml; export and the checkpoint detector only
check it. Marked slow: one training step and one export of the tiny model.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow


def test_export_and_detector_work_after_the_training_records_are_deleted(shapes_records, tiny_experiment, tmp_path):
    from tfmaskrcnn.cli import train
    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export
    from tfmaskrcnn.serving.export import sample_images

    # A private copy of the records: the session's shared fixture must survive this test.
    records_dir = tmp_path / "records"
    shutil.copytree(os.path.join(shapes_records["dir"], "records"), records_dir)
    records = {split: str(records_dir / split / "*.tfrecord") for split in ("train", "val")}
    params = tiny_experiment(records, train_steps=1)
    params.task.class_balance.weighting.scheme = "inverse"
    params.task.train_data.sampling.type = "repeat_factor"
    model_dir = str(tmp_path / "run")
    train.run(params, model_dir, "train")

    with open(os.path.join(model_dir, "params.yaml")) as f:
        recorded = yaml.safe_load(f)["task"]
    assert recorded["model"]["num_classes"] == 4
    assert recorded["label_map_path"] == str(records_dir / "train" / "label_map.json")
    assert len(recorded["class_balance"]["weighting"]["weights"]) == 4
    assert recorded["train_data"]["sampling"]["threshold"] is not None
    assert recorded["validation_data"]["num_examples"] == 8

    shutil.rmtree(records_dir)

    detector = inference.CheckpointDetector.from_model_dir(model_dir)
    assert detector.label_map.names == ("square", "circle", "triangle")
    out = detector(sample_images(seed=1)[0])
    assert set(out) >= {"boxes", "scores", "classes", "masks"}

    export_dir = str(tmp_path / "saved_model")
    params = inference.load_params(os.path.join(model_dir, "params.yaml"))
    verification = export.export_model(
        params, inference.latest_checkpoint(model_dir), export_dir, verify_images=sample_images(seed=2)[:1]
    )
    assert verification is not None and verification.signatures_checked
    assert LabelMap.load(os.path.join(export_dir, "assets", "label_map.json")).names == detector.label_map.names
    saved = inference.SavedModelDetector(export_dir)
    assert np.asarray(saved(sample_images(seed=1)[0])["scores"]).ndim == 1
