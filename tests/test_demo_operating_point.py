"""The demo report's operating-point section: the cure's per-class precision / recall / F1 at the
score threshold the exported model ships with (per class when calibrated, else the global one)."""

from __future__ import annotations

import re

from tfmaskrcnn.evaluation import demo_report

NAMES = ("square", "circle", "triangle")


def _metrics(per_class: dict, operating_point: dict | None = None) -> dict:
    rows = {}
    for name, (threshold, precision, recall, f1, predicted) in per_class.items():
        rows[name] = {
            "class": name,
            "gt_instances": 30,
            "bbox_AP": 0.4,
            "mask_AP": 0.4,
            "score_threshold": threshold,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "predicted": predicted,
        }
    metrics = {
        "per_class": rows,
        "overall": {"bbox": {"AP": 0.3}, "segm": {"AP": 0.3}},
        "alarm": {"verdict": "ok", "reasons": []},
    }
    if operating_point is not None:
        metrics["operating_point"] = operating_point
    return metrics


def _story(cure: dict, baseline: dict, export: dict) -> dict:
    runs = {
        run: {
            "settings": "s",
            "steps": 6,
            "train_seconds": 1.0,
            "metrics": m,
            "confusion_png": b"png",
            "eval_link": "e",
        }
        for run, m in (("baseline", baseline), ("cure", cure))
    }
    return {
        "title": "t",
        "lede": "l",
        "names": list(NAMES),
        "dataset": {"num_train": 1, "num_val": 1, "train_counts": {}, "val_counts": {}},
        "audit": None,
        "runs": runs,
        "rows": demo_report.comparison_rows(NAMES, baseline, cure),
        "overall": {"baseline": {}, "cure": {}},
        "score_threshold": 0.5,
        "doctor": None,
        "export": export,
        "predictions": [],
        "images": {},
    }


def _section(page: str) -> str:
    return page.split("5. The cure at its shipped operating point", 1)[1].split("<h2>", 1)[0]


def test_per_class_thresholds_are_named_and_each_class_has_its_precision_and_recall():
    cure = _metrics(
        {
            "square": (0.62, 0.9, 0.6, 0.72, 20),
            "circle": (0.35, 0.75, 0.5, 0.6, 20),
            "triangle": (0.2, 0.5, 0.1, 0.1667, 6),
        },
        {
            "name": "per-class score thresholds (calibration.json of the model dir, f1)",
            "global_threshold": 0.5,
            "per_class_thresholds": True,
            "thresholds": {"square": 0.62, "circle": 0.35, "triangle": 0.2},
        },
    )
    baseline = _metrics({n: (0.5, None, 0.0, None, 0) for n in NAMES})
    rows = demo_report.operating_point_rows(NAMES, cure)
    assert [(r["class"], r["score_threshold"], r["recall"]) for r in rows] == [
        ("square", 0.62, 0.6),
        ("circle", 0.35, 0.5),
        ("triangle", 0.2, 0.1),
    ]
    page = demo_report.render_story_html(
        _story(cure, baseline, {"path": "x", "note": "n", "score_thresholds": [0.62, 0.35, 0.2]})
    )
    section = _section(page)
    assert "per-class score thresholds (calibration.json of the model dir, f1)" in section
    triangle = re.search(r"<tr><td>triangle</td>(.*?)</tr>", section).group(1)
    assert re.findall(r"<td>([^<]*)</td>", triangle) == ["0.200", "30", "6", "0.500", "0.100", "0.167"]
    # The predictions section says the SavedModel returns decisions at those thresholds.
    assert "its decisions: square &ge; 0.62, circle &ge; 0.35, triangle &ge; 0.2" in page


def test_without_calibration_the_operating_point_is_the_global_threshold():
    cure = _metrics({n: (0.5, 0.8, 0.4, 0.5333, 12) for n in NAMES})  # an eval without operating_point
    page = demo_report.render_story_html(_story(cure, cure, {"path": "x", "note": "n"}))
    section = _section(page)
    assert "<b>global score threshold 0.5</b>" in section
    assert section.count("<td>0.500</td>") == 3 and "score &ge; 0.5" in page


def test_the_report_says_how_and_on_which_split_the_shipped_thresholds_were_chosen():
    cure = _metrics(
        {
            "square": (0.7, 0.9, 0.8, 0.85, 20),
            "circle": (0.3, 0.8, 0.7, 0.75, 20),
            "triangle": (0.5, None, 0.0, None, 0),
        },
        {"name": "per-class score thresholds", "global_threshold": 0.5, "per_class_thresholds": True},
    )
    story = _story(cure, cure, {"path": "x", "note": "n", "score_thresholds": [0.7, 0.3, 0.5]})
    reason = "4 objects in the held-out split, fewer than --min-objects 10; the global threshold 0.5 is kept"
    story["calibration"] = {
        "split": "calib",
        "images": 32,
        "command": "tfmaskrcnn calibrate --model_dir runs/cure --data 'records/calib/*.tfrecord' --select balance",
        "gammas": [0.0, 0.25, 0.5],
        "select": "balance",
        "gamma": 0.25,
        "note": None,
        "alarm_on_split": {"global": "warning", "thresholds": "ok"},
        "held_out": {
            "square": {
                "threshold": 0.7,
                "num_objects": 30,
                "precision": 0.9,
                "recall": 0.8,
                "f1": 0.847,
                "fallback": False,
                "reason": None,
            },
            "circle": {
                "threshold": 0.3,
                "num_objects": 28,
                "precision": 0.8,
                "recall": 0.7,
                "f1": 0.747,
                "fallback": False,
                "reason": None,
            },
            "triangle": {
                "threshold": 0.5,
                "num_objects": 4,
                "precision": None,
                "recall": 0.0,
                "f1": None,
                "fallback": True,
                "reason": reason,
            },
        },
    }
    section = _section(demo_report.render_story_html(story))
    assert "on the held-out <b>calib</b> split (32 images" in section
    assert "<b>&gamma; 0.25</b> of 0, 0.25, 0.5 (--select balance)" in section
    assert "WARNING at the global threshold, OK at the per-class thresholds" in section
    circle = re.search(r"<tr><td>circle</td>(.*?)</tr>", section.split("held-out objects", 1)[1]).group(1)
    assert re.findall(r"<td>([^<]*)</td>", circle) == ["0.300", "28", "0.800", "0.700", "0.747"]
    assert reason in section  # the class that kept the global threshold says why
    # Without a post-hoc step the section has no such paragraph.
    del story["calibration"]
    assert "held-out objects" not in _section(demo_report.render_story_html(story))
