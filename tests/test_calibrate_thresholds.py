"""`tfmaskrcnn calibrate --thresholds` on a real (untrained) model and records, and `tfmaskrcnn eval`
measuring at the thresholds it wrote: the operating point named, both operating points side by
side with --compare, and the warnings about fitting and reporting on the same records."""

from __future__ import annotations

import collections
import json
import os

import pytest

from tfmaskrcnn.serving import calibration as norcal


@pytest.fixture(scope="module")
def run(untrained_model_dir, tmp_path_factory):
    """A private copy of the session's untrained model dir: calibrate writes calibration.json into it."""
    from conftest import copy_run

    root = tmp_path_factory.mktemp("thresholds")
    return {"model_dir": copy_run(untrained_model_dir["model_dir"], root / "model"), **untrained_model_dir}


def _objects_per_class(pattern):
    from tfmaskrcnn.data.records import decoded_examples

    counts = collections.Counter()
    for _, _, example in decoded_examples(pattern, include_mask=False):
        for label, crowd in zip(example["groundtruth_classes"], example["groundtruth_is_crowd"]):
            counts[int(label)] += not crowd
    return counts


@pytest.mark.slow
def test_calibrate_thresholds_then_eval_at_them(run, tmp_path, capsys):
    from tfmaskrcnn import cli
    from tfmaskrcnn.serving import detector as inference

    model_dir, val = run["model_dir"], run["records"]["val"]
    args = ["--gammas", "0", "--thresholds", "f1", "--min-objects", "1", "--score_threshold", "0.3", "--match", "bbox"]
    assert cli.main(["calibrate", "--model_dir", model_dir, "--data", val, *args]) == 0
    captured = capsys.readouterr()
    assert "per-class score thresholds (f1;" in captured.out and "at global: precision" in captured.out
    assert "shares" in captured.err and "validation split" in captured.err  # fitted on the run's val records
    with open(os.path.join(model_dir, norcal.CALIBRATION_FILENAME)) as f:
        written = json.load(f)
    calibration = norcal.Calibration.from_dict(written)
    details = calibration.threshold_details
    assert [d["class"] for d in details] == calibration.class_names
    assert calibration.score_thresholds == [d["threshold"] for d in details]
    objects = _objects_per_class(val)
    assert [d["num_objects"] for d in details] == [objects[c] for c in range(1, len(details) + 1)]
    assert calibration.threshold_fit["rule"] == "f1" and "bbox IoU >= 0.5" in calibration.threshold_fit["match"]
    assert calibration.source["data_files"] and all(os.path.isabs(f) for f in calibration.source["data_files"])
    # Each threshold is a score the class's detections reach on --data, or the global one with the reason.
    raw = inference.detections_from_model(model_dir=model_dir, data=val, progress=False)
    for class_id, detail in enumerate(details, start=1):
        if detail["fallback"]:
            assert detail["threshold"] == 0.3 and detail["reason"]
        else:
            scores = [d["score"] for d in raw if d["category_id"] == class_id]
            assert min(abs(s - detail["threshold"]) for s in scores) < 1e-5, detail
            assert detail["num_detections"] == sum(s >= detail["threshold"] - 1e-5 for s in scores)

    # eval measures at those thresholds, names the operating point and warns: fitted on these records.
    at_thresholds, at_global = str(tmp_path / "thresholds"), str(tmp_path / "global")
    base = ["eval", "--model_dir", model_dir, "--data", val, "--score-threshold", "0.3", "--images-per-class", "0"]
    assert cli.main([*base, "--output", at_global, "--no-class-thresholds", "--quiet"]) == 0
    assert cli.main([*base, "--output", at_thresholds, "--compare", at_global, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "was fitted on" in captured.err and "tfmaskrcnn split" in captured.err
    assert "operating point: per-class score thresholds (calibration.json of the model dir, f1)" in captured.out
    with open(os.path.join(at_thresholds, "metrics.json")) as f:
        metrics = json.load(f)
    point = metrics["operating_point"]
    assert point["per_class_thresholds"] and point["warnings"]
    assert [point["thresholds"][n] for n in calibration.class_names] == calibration.score_thresholds
    for name, threshold in zip(calibration.class_names, calibration.score_thresholds):
        assert metrics["per_class"][name]["score_threshold"] == threshold
        assert metrics["compare"]["per_class"][name]["score_threshold"]["other"] == 0.3
    assert metrics["compare"]["operating_point"]["other"].startswith(
        "global score threshold 0.3 (--no-class-thresholds"
    )
    with open(os.path.join(at_global, "metrics.json")) as f:
        global_metrics = json.load(f)
    # AP ranks every score at both operating points; only the decisions differ.
    for name in calibration.class_names:
        assert metrics["per_class"][name]["bbox_AP"] == global_metrics["per_class"][name]["bbox_AP"]


@pytest.mark.slow
def test_rare_classes_keep_the_global_threshold(run, tmp_path, capsys):
    from tfmaskrcnn import cli

    output = str(tmp_path / "calibration.json")
    args = ["--gammas", "0", "--thresholds", "precision:0.9", "--min-objects", "1000", "--output", output]
    assert cli.main(["calibrate", "--model_dir", run["model_dir"], "--data", run["records"]["val"], *args]) == 0
    calibration = norcal.load(output)
    assert calibration.score_thresholds == [0.5] * len(calibration.class_names)
    assert all(d["fallback"] and "fewer than --min-objects 1000" in d["reason"] for d in calibration.threshold_details)
    assert calibration.threshold_fit["fallbacks"] == calibration.class_names
    assert "(global: " in capsys.readouterr().out


def test_threshold_rule_errors_before_any_work(capsys):
    from tfmaskrcnn import cli

    assert cli.main(["calibrate", "--model_dir", "nowhere", "--data", "x", "--thresholds", "precision:2"]) == 2
    assert "expected f1, precision:P or recall:R" in capsys.readouterr().err


def test_evidence_outside_zero_to_one_is_refused_before_any_work(capsys):
    from tfmaskrcnn import cli

    assert (
        cli.main(["calibrate", "--model_dir", "nowhere", "--data", "x", "--thresholds", "f1", "--evidence", "1"]) == 2
    )
    assert "--evidence 1.0: a confidence in [0, 1)" in capsys.readouterr().err
