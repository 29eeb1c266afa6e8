"""`tfmaskrcnn demo`: every stage runs and every artifact the report promises exists and is sane.

The slow test runs `tfmaskrcnn demo --quick` in-process (a few images and steps: it shows that
every stage runs, not a cure); the fast tests check the report renderer and the training
progress line without a model.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tfmaskrcnn.cli import console, demo
from tfmaskrcnn.evaluation import demo_report

NAMES = ("square", "circle", "triangle")


def _metrics(mask_ap: dict, verdict: str, reasons=()) -> dict:
    return {
        "per_class": {
            n: {"class": n, "gt_instances": 30, "bbox_AP": v, "mask_AP": v, "predicted": 10} for n, v in mask_ap.items()
        },
        "overall": {"bbox": {"AP": 0.3}, "segm": {"AP": 0.3}},
        "alarm": {"verdict": verdict, "reasons": list(reasons)},
    }


def test_comparison_rows_give_both_runs_and_the_delta():
    baseline = _metrics({"square": 0.4, "circle": 0.3, "triangle": 0.1}, "collapse", ["'square' takes 100%"])
    cure = _metrics({"square": 0.38, "circle": 0.5, "triangle": 0.3}, "ok")
    rows = demo_report.comparison_rows(NAMES, baseline, cure)
    assert [r["class"] for r in rows] == list(NAMES)
    triangle = rows[2]
    assert triangle["baseline_mask_AP"] == 0.1 and triangle["cure_mask_AP"] == 0.3
    assert triangle["delta_mask_AP"] == pytest.approx(0.2)
    png = demo_report.per_class_comparison_png(NAMES, baseline, cure, {"square": 880, "circle": 80, "triangle": 40})
    assert png.startswith(b"\x89PNG")


def test_summary_line_is_one_compact_line():
    output = {"training_loss": 1.2345, "frcnn_cls_loss": 0.25, "mask_loss": 0.5, "learning_rate": 0.02}
    line = console.format_summary_line(400, 1000, output, 0.36)
    assert "\n" not in line
    assert line.startswith("step  400/1000") and "loss 1.234" in line and "cls 0.250" in line
    assert "lr 0.02" in line and "0.36 s/step" in line


@pytest.mark.slow
def test_quick_demo_writes_the_whole_story(tmp_path, capsys):
    from tfmaskrcnn import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"output folder: {os.path.abspath(out)}" in printed
    assert "step 6/6" in printed and "np.float32" not in printed  # compact lines, not Model Garden's dict

    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == list(NAMES)
    counts = summary["train_instances"]
    assert counts["square"] / sum(counts.values()) >= 0.85  # the majority holds >= 85% of the instances
    assert summary["rarest_class"] == "triangle"
    assert set(summary["alarm"]) == {"baseline", "cure"}
    assert all(v in ("ok", "warning", "collapse") for v in summary["alarm"].values())
    # 6 steps train no detector: nothing reaches the 0.5 operating point, every class with ground
    # truth goes unfound, and both runs' alarm says COLLAPSE, in summary.json and the printed table.
    assert summary["alarm"] == {"baseline": "collapse", "cure": "collapse"}
    assert re.search(r"collapse alarm\s+COLLAPSE\s+COLLAPSE", printed)

    report = (out / "report.html").read_text()
    for words in ("baseline", "cure", "Collapse alarm", "Confusion matrices", "doctor", "SavedModel"):
        assert words.lower() in report.lower(), words
    for name in NAMES:
        assert f'id="class-{name}"' in report
    assert report.count("confusion matrix") >= 2  # both runs' matrices
    assert "data:image/png;base64," in report

    assert (out / "per_class_mask_ap.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "audit" / "report.html").exists()
    for run in ("baseline", "cure"):
        metrics = json.loads((out / "eval" / run / "metrics.json").read_text())
        assert set(metrics["per_class"]) == set(NAMES)
        assert metrics["alarm"]["verdict"] == summary["alarm"][run]
        assert any("never found" in reason for reason in metrics["alarm"]["reasons"]), metrics["alarm"]
        assert (out / "eval" / run / "confusion_matrix.png").exists()
    assert "compare" in json.loads((out / "eval" / "cure" / "metrics.json").read_text())
    doctor = json.loads((out / "doctor" / "doctor.json").read_text())
    assert doctor["findings"] and "severity" in doctor["findings"][0]

    from tfmaskrcnn.serving.detector import SavedModelDetector

    detector = SavedModelDetector(str(out / "export" / "cure"))
    assert list(detector.label_map.names) == list(NAMES)
    _assert_cure_ships_thresholds_fitted_on_the_held_out_split(out, summary, detector, printed)
    overlays = sorted(p for p in os.listdir(out / "predictions") if p.endswith(".png"))
    assert len(overlays) == demo.QUICK["predict_images"]
    assert (out / "predictions" / "detections.json").exists()


def _images_of(pattern: str) -> set:
    from tfmaskrcnn.data.records import decoded_examples

    return {example["image"].tobytes() for _, _, example in decoded_examples(pattern, False, include_image=True)}


def _assert_cure_ships_thresholds_fitted_on_the_held_out_split(out, summary, detector, printed):
    """The SavedModel the demo ships carries one score threshold per class, chosen by
    `calibrate --select balance --thresholds f1` on the calib split, which shares no image with
    the validation split the report measures; summary.json and the report say so."""
    from tfmaskrcnn.cli import demo_stages

    post = summary["cure_post_hoc"]
    calib_records = str(out / "records" / "calib" / "*.tfrecord")
    assert post["split"] == "calib" and post["data"] == calib_records
    assert post["images"] == demo.QUICK["num_calib"]
    assert post["rule"] == "f1" and set(post["score_thresholds"]) == set(NAMES)
    # 6 steps give no confident detection at any gamma: balance has nothing to compare, gamma 0 is kept.
    assert (post["gamma"], post["select"]) == (0.0, "ap") and "nothing to compare" in post["note"]
    assert post["gammas"] == list(demo_stages.CALIB_GAMMAS) and post["gamma"] in post["gammas"]
    calibration = json.loads((out / "runs" / "cure" / "calibration.json").read_text())
    assert calibration["source"]["data"] == calib_records
    assert calibration["score_thresholds"] == [post["score_thresholds"][n] for n in NAMES]
    assert calibration["gamma"] == post["gamma"]
    assert not set(calibration["source"]["data_files"]) & {
        os.path.abspath(p) for p in (out / "records" / "val").glob("*.tfrecord")
    }
    calib_images, val_images = _images_of(calib_records), _images_of(str(out / "records" / "val" / "*.tfrecord"))
    assert len(calib_images) == demo.QUICK["num_calib"] and not calib_images & val_images
    # What the SavedModel applies, and what eval measured the cure at, are those thresholds.
    assert detector.score_thresholds == pytest.approx(calibration["score_thresholds"])
    assert (
        json.loads((out / "export" / "cure" / "assets" / "calibration.json").read_text())["score_thresholds"]
        == (calibration["score_thresholds"])
    )
    point = json.loads((out / "eval" / "cure" / "metrics.json").read_text())["operating_point"]
    assert point["per_class_thresholds"] is True
    assert point["thresholds"] == pytest.approx(post["score_thresholds"])
    assert summary["cure_operating_point"]["per_class"]["triangle"]["score_threshold"] == pytest.approx(
        post["score_thresholds"]["triangle"]
    )
    report = (out / "report.html").read_text()
    assert "held-out <b>calib</b> split" in report and demo_stages.CALIB_SELECT in report
    assert "fitted on the held-out calib split (9 images)" in printed
