"""`tfmaskrcnn doctor`: each cause of a one-class model diagnosed by its own check, on real tiny models.

Fast tests call the pure checks of `tfmaskrcnn.diagnostics.doctor` on plain numbers. The slow ones
train three tiny models once for the module (3 steps on balanced shapes, 0 steps, 1 step on shapes
whose every instance was relabelled to one class), write one checkpoint without the box head, and
diagnose them against the matching, a reordered and a foreign validation set.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from tfmaskrcnn.diagnostics import doctor
from tfmaskrcnn.diagnostics.doctor import ERROR, INFO, WARNING


def _only(findings, check: str, severity: str):
    hits = [f for f in findings if f.check == check and f.severity == severity]
    assert hits, f"no {severity} {check} in {[(f.severity, f.check, f.what) for f in findings]}"
    return hits[0]


# ------------------------------------------------------------------ pure checks
def test_num_classes_and_class_weights_against_the_label_map():
    assert doctor.check_num_classes(4, ["a", "b", "c"], "lm.json") == []
    finding = _only(doctor.check_num_classes(3, ["a", "b", "c"], "lm.json"), "num_classes", ERROR)
    assert "num_classes=4" in finding.fix
    assert doctor.check_class_weights([], 4) == [] and doctor.check_class_weights([1, 1, 1, 1], 4) == []
    finding = _only(doctor.check_class_weights([1, 2, 3], 4), "class_weights", ERROR)
    assert "no background weight" in finding.what and "background first" in finding.fix


def test_class_head_at_init_is_an_error_and_a_moved_bias_is_not():
    rng = np.random.default_rng(0)
    init = rng.normal(0, 0.01, (256, 4))
    same_spread = rng.normal(0, 0.01, (256, 4))
    finding = _only(
        doctor.check_class_head(same_spread, np.zeros(4), init, np.zeros(4), "ckpt-0", 0), "class_head_trained", ERROR
    )
    assert finding.evidence["bias_max_change_from_init"] == 0.0
    # One SGD step moves the bias; the kernel's spread barely changes in a few steps.
    assert doctor.check_class_head(same_spread, np.full(4, 1e-4), init, np.zeros(4), "ckpt-3", 3) == []
    barely = doctor.check_class_head(init * 1.02, np.full(4, 1e-5), init, np.zeros(4), "ckpt-5000", 5000)
    _only(barely, "class_head_trained", WARNING)


def test_training_labels_all_in_one_class():
    finding = _only(doctor.check_training_labels(["a", "b", "c"], [40, 0, 0], "train/*"), "training_labels", ERROR)
    assert "all 40 training instances are 'a'" in finding.what
    _only(doctor.check_training_labels(["a", "b", "c"], [85, 10, 5], "train/*"), "training_labels", WARNING)
    assert doctor.check_training_labels(["a", "b", "c"], [30, 30, 30], "train/*") == []


def test_settings_rules():
    _only(doctor.check_epochs(10, 4, 400), "epochs", WARNING)  # 0.1 epochs
    assert doctor.check_epochs(1200, 4, 400) == []  # 12 epochs
    _only(doctor.check_epochs(10**6, 16, 1000), "epochs", INFO)
    schedule = {"learning_rate": {"type": "stepwise", "stepwise": {"boundaries": [5], "values": [0.004, 0.02]}}}
    assert doctor.peak_learning_rate(schedule) == 0.02
    assert doctor.check_learning_rate(0.02, 16) == [] and doctor.check_learning_rate(0.02, 4) == []  # 4x: the edge
    finding = _only(doctor.check_learning_rate(0.16, 16), "learning_rate", WARNING)
    assert finding.evidence["ratio"] == 8.0
    _only(doctor.check_learning_rate(0.001, 16), "learning_rate", WARNING)
    # 0.997 keeps 74% of the init after 100 steps; 2 images per step are noise.
    finding = _only(doctor.check_batch_norm(0.997, False, False, 2, 1, 100), "batch_norm", WARNING)
    assert "2 image(s)" in finding.what and "74%" in finding.what
    assert doctor.check_batch_norm(0.9, False, False, 8, 2, 1000) == []
    assert doctor.check_batch_norm(0.997, False, True, 2, 1, 100) == []  # frozen backbone


def test_init_report_names_class_layers_not_restored():
    report = {
        "checkpoint": "pre/ckpt-9",
        "modules": ["backbone"],
        "reinitialized": [],
        "not_requested": [
            {
                "variable": "model/detection_head/detection-scores/kernel:0",
                "module": "detection_head",
                "checkpoint_key": "model/detection_head/detection-scores/kernel/.ATTRIBUTES/VARIABLE_VALUE",
            },
            # Not in the checkpoint (no checkpoint_key): `modules: all` could not restore it.
            {"variable": "model/mask_head/mask-logits/kernel:0", "module": "mask_head"},
        ],
        "missing": [],
    }
    layers = ("detection-scores", "detection-boxes", "mask-logits")
    finding = _only(doctor.check_init_report(report, layers, "init_report.json"), "init_checkpoint", WARNING)
    assert finding.evidence["not_requested"] == ["detection-scores"] and "init_checkpoint_modules: all" in finding.fix
    # A backbone-only checkpoint (ImageNet): the heads it does not hold are no finding.
    backbone_only = dict(report, not_requested=[report["not_requested"][1]])
    assert not [f for f in doctor.check_init_report(backbone_only, layers, "r.json") if f.check == "init_checkpoint"]
    report["not_requested"], report["reinitialized"] = [], [{"layer": "detection-scores", "variable": "x"}]
    _only(doctor.check_init_report(report, layers, "init_report.json"), "init_checkpoint", INFO)


def test_collapse_verdict_is_an_error_and_the_report_round_trips():
    metrics = {
        "num_images": 50,
        "score_threshold": 0.5,
        "per_class": {"a": {"gt_instances": 30, "predicted": 90}, "b": {"gt_instances": 30, "predicted": 2}},
        "alarm": {"verdict": "collapse", "reasons": ["'a' takes 98% of confident detections"]},
    }
    report = doctor.DoctorReport("runs/x")
    report.add(doctor.check_predictions(metrics, "val/*"))
    report.add([doctor.skipped("epochs", "unknown")])
    _only(report.findings, "predicted_classes", ERROR)
    assert report.exit_code == 1 and report.to_dict()["counts"] == {"error": 1, "warning": 0, "info": 1}
    assert "ERROR    predicted_classes" in report.summary() and "exit 1" in report.summary()
    metrics["alarm"]["verdict"] = "warning"
    _only(doctor.check_predictions(metrics, "val/*"), "predicted_classes", WARNING)
    metrics["alarm"] = {"verdict": "ok", "reasons": []}
    finding = _only(doctor.check_predictions(metrics, "val/*"), "predicted_classes", INFO)
    assert finding.evidence["predicted_per_class"] == {"a": 90, "b": 2}


def _row(ap, recall, objects=20, threshold=0.5):
    return {"mask_AP": ap, "bbox_AP": ap, "recall": recall, "gt_instances": objects, "score_threshold": threshold}


def test_a_class_found_by_ap_but_lost_at_the_operating_point():
    metrics = {
        "num_images": 40,
        "score_threshold": 0.5,
        "operating_point": {"name": "global score threshold 0.5", "per_class_thresholds": False},
        "per_class": {
            "lost": _row(0.42, 0.0),  # found at low scores, never reported: the finding
            "weak": _row(0.03, 0.0),  # not found at any score: a training problem, not this one
            "fine": _row(0.6, 0.7),
            "rare": _row(0.5, 0.0, objects=3),  # too few objects to call its recall
            "absent": {"mask_AP": None, "bbox_AP": None, "recall": None, "gt_instances": 0},
        },
    }
    finding = _only(doctor.check_operating_point(metrics, "val/*"), "operating_point", WARNING)
    assert list(finding.evidence["classes"]) == ["lost"]
    assert finding.evidence["classes"]["lost"] == {"AP": 0.42, "recall": 0.0, "objects": 20, "score_threshold": 0.5}
    assert "'lost' (AP 0.42, recall 0.00)" in finding.what and "global score threshold 0.5" in finding.what
    assert (
        "tfmaskrcnn calibrate" in finding.fix and "--thresholds f1" in finding.fix and "tfmaskrcnn split" in finding.fix
    )
    # Box AP stands in when the evaluation had no masks; recall just above the limit is not lost.
    metrics["per_class"]["lost"] = dict(_row(0.42, 0.0), mask_AP=None)
    assert doctor.check_operating_point(metrics, "val/*")
    metrics["per_class"]["lost"] = _row(0.42, 0.06)
    assert doctor.check_operating_point(metrics, "val/*") == []
    # Already at per-class thresholds: the fix says to fit them again.
    metrics["per_class"]["lost"] = _row(0.42, 0.0, threshold=0.9)
    metrics["operating_point"] = {"name": "per-class score thresholds", "per_class_thresholds": True}
    assert "again" in _only(doctor.check_operating_point(metrics, "val/*"), "operating_point", WARNING).fix


# ------------------------------------------------------------------ real tiny models
def _train(params, model_dir: pathlib.Path) -> str:
    from tfmaskrcnn.cli import train

    train.run(params, str(model_dir), "train")
    return str(model_dir)


@pytest.fixture(scope="module")
def trained_dir(tiny_run_dir, tmp_path_factory) -> str:
    from conftest import copy_run

    # The session's 2-step run (conftest.py), copied: diagnose writes doctor.json into the model dir.
    return copy_run(tiny_run_dir, tmp_path_factory.mktemp("doctor_trained") / "run")


@pytest.fixture(scope="module")
def untrained_dir(shapes_records, tiny_experiment, tmp_path_factory) -> str:
    # Model Garden's trainer writes ckpt-0 straight after building: a class head that never trained.
    return _train(tiny_experiment(shapes_records, train_steps=0), tmp_path_factory.mktemp("doctor_untrained"))


def _one_class_records(root: pathlib.Path) -> dict:
    """Shapes whose every training annotation says class 1, while 3 categories are declared."""
    from tfmaskrcnn.data import convert
    from tfmaskrcnn.data.shapes import generator as shapes

    shapes.generate_shapes_dataset(root / "coco", num_train=12, num_val=4, seed=3, progress=False)
    annotations = root / "coco" / "annotations" / "instances_train.json"
    dataset = json.loads(annotations.read_text())
    for annotation in dataset["annotations"]:
        annotation["category_id"] = dataset["categories"][0]["id"]
    annotations.write_text(json.dumps(dataset))
    records = {}
    for split in ("train", "val"):
        out = root / "records" / split
        coco_json = str(root / "coco" / "annotations" / f"instances_{split}.json")
        convert.convert_coco(coco_json, str(root / "coco" / split), str(out), num_shards=1, progress=False)
        records[split] = str(out / "*.tfrecord")
    return records


@pytest.mark.slow
def test_labels_all_one_class_are_diagnosed_from_the_training_records(tiny_experiment, tmp_path_factory):
    from tfmaskrcnn.cli.doctor import diagnose

    root = tmp_path_factory.mktemp("one_class")
    records = _one_class_records(root)
    model_dir = _train(tiny_experiment(records, train_steps=1), root / "model")
    report = diagnose(model_dir, max_images=4)
    finding = _only(report.findings, "training_labels", ERROR)
    assert finding.what.startswith("all ") and "'square'" in finding.what and "3 classes" in finding.what
    assert finding.evidence["instances_per_class"]["circle"] == 0
    assert report.exit_code == 1


@pytest.mark.slow
def test_healthy_model_passes_label_and_config_checks(trained_dir, shapes_records):
    from tfmaskrcnn.cli.doctor import diagnose

    report = diagnose(trained_dir, data=shapes_records["val"], max_images=8)
    assert report.exit_code == 0, report.summary()
    checks = {f.check for f in report.findings}
    assert not checks & {"num_classes", "class_weights", "label_map_match", "class_head_trained", "training_labels"}
    # A 2-step run is far from sane in its epochs; a warning, not an error.
    _only(report.findings, "epochs", WARNING)
    written = json.loads((pathlib.Path(trained_dir) / "doctor.json").read_text())
    assert written["exit_code"] == 0 and written["findings"]


@pytest.mark.slow
def test_untrained_class_head_is_an_error_through_the_cli(untrained_dir, shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli

    argv = ["doctor", "--model_dir", untrained_dir, "--data", shapes_records["val"], "--max_images", "4"]
    assert cli.main(argv + ["--output", str(tmp_path), "--quiet"]) == 1
    assert "ERROR    class_head_trained" in capsys.readouterr().out
    written = json.loads((tmp_path / "doctor.json").read_text())
    head = [f for f in written["findings"] if f["check"] == "class_head_trained"]
    assert [f["severity"] for f in head] == [ERROR]
    assert head[0]["evidence"]["checkpoint_step"] == 0 and head[0]["evidence"]["bias_max_change_from_init"] == 0


@pytest.mark.slow
def test_checkpoint_without_the_box_head_is_an_error(trained_dir, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.cli.doctor import diagnose
    from tfmaskrcnn.serving.detector import CheckpointDetector, load_params

    for name in ("params.yaml", "label_map.json"):
        shutil.copy(pathlib.Path(trained_dir) / name, tmp_path / name)
    detector = CheckpointDetector(load_params(str(tmp_path / "params.yaml")))
    detector(np.zeros((64, 64, 3), np.uint8))
    parts = {k: v for k, v in detector.model.checkpoint_items.items() if k != "detection_head"}
    tf.train.Checkpoint(**parts).save(str(tmp_path / "ckpt"))
    report = diagnose(str(tmp_path), max_images=0)
    finding = _only(report.findings, "class_head_trained", ERROR)
    assert "no values for the class-logit layer" in finding.what
    assert any("detection-scores" in v for v in finding.evidence["missing_variables"])


def _copy_records(pattern: str, to: pathlib.Path) -> pathlib.Path:
    shutil.copytree(pathlib.Path(pattern).parent, to)
    return to


@pytest.mark.slow
def test_label_map_reordered_after_training_names_the_swapped_classes(trained_dir, shapes_records, tmp_path):
    from tfmaskrcnn.cli.doctor import diagnose
    from tfmaskrcnn.data.label_map import LabelMap

    val = _copy_records(shapes_records["val"], tmp_path / "val")
    trained = LabelMap.load(str(val / "label_map.json"))
    names, ids = list(trained.names), list(trained.coco_ids)
    names[0], names[1] = names[1], names[0]
    LabelMap(names, ids).save(str(val / "label_map.json"))
    report = diagnose(trained_dir, data=str(val / "*.tfrecord"), output=str(tmp_path))
    finding = _only(report.findings, "label_map_match", ERROR)
    assert f"class id 1 is {trained.names[0]!r}" in finding.what and repr(trained.names[1]) in finding.what
    _only(report.findings, "predicted_classes", INFO)  # not run against the wrong names
    assert report.exit_code == 1


@pytest.mark.slow
def test_validation_set_with_other_categories_is_an_error(trained_dir, tmp_path):
    from conftest import make_shapes_records

    from tfmaskrcnn.cli.doctor import diagnose

    other = make_shapes_records(
        tmp_path / "other", num_train=2, num_val=3, classes=("hexagon", "cross", "ellipse", "arrow")
    )
    report = diagnose(trained_dir, data=other["val"], output=str(tmp_path))
    finding = _only(report.findings, "label_map_match", ERROR)
    assert "'hexagon'" in finding.what and "'square'" in finding.what
    assert report.exit_code == 1


def test_missing_model_dir_and_params_name_the_path_and_the_fix(tmp_path):
    from tfmaskrcnn.cli.doctor import diagnose

    report = diagnose(str(tmp_path / "nope"))
    finding = _only(report.findings, "model_dir", ERROR)
    assert "nope does not exist" in finding.what and "tfmaskrcnn train" in finding.fix
    assert not (tmp_path / "nope").exists()  # no doctor.json creates the folder
    finding = _only(diagnose(str(tmp_path)).findings, "model_dir", ERROR)
    assert "params.yaml not found" in finding.what


def test_help(capsys):
    from tfmaskrcnn import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["doctor", "--help"])
    assert stop.value.code == 0
    assert "--model_dir" in capsys.readouterr().out
