"""`tfmaskrcnn eval --detections RESULTS.json --calibration calibration.json`: a saved results file
measured at the per-class score thresholds the model ships with, against counts made by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfmaskrcnn import cli
from tfmaskrcnn.serving import calibration as norcal

CIRCLE_BOX, SQUARE_BOX, EMPTY_BOX = [10, 10, 30, 30], [60, 60, 30, 30], [50, 5, 20, 20]
THRESHOLDS = {"circle": 0.6, "square": 0.2}
GLOBAL = 0.5
# (image, class, score, on which box): every image holds one circle and one square. A circle
# detection on a square is a confusion; a square detection on the empty box a false positive.
DETECTIONS = [
    (1, "circle", 0.95, CIRCLE_BOX),
    (2, "circle", 0.75, CIRCLE_BOX),
    (3, "circle", 0.55, CIRCLE_BOX),
    (4, "circle", 0.35, CIRCLE_BOX),
    (1, "square", 0.90, SQUARE_BOX),
    (2, "square", 0.45, SQUARE_BOX),
    (3, "square", 0.25, SQUARE_BOX),
    (4, "square", 0.15, SQUARE_BOX),
    (1, "circle", 0.65, SQUARE_BOX),
    (2, "circle", 0.40, SQUARE_BOX),
    (3, "square", 0.50, EMPTY_BOX),
]
OBJECTS_PER_CLASS = 4


def _by_hand(thresholds: dict) -> dict:
    """Per class: detections kept (score >= its threshold), precision and recall of those kept."""
    expected = {}
    for name in ("circle", "square"):
        rows = [
            (score, box == (CIRCLE_BOX if name == "circle" else SQUARE_BOX))
            for _, c, score, box in DETECTIONS
            if c == name
        ]
        scores, true = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        kept = scores >= thresholds[name]
        expected[name] = {
            "predicted": int(kept.sum()),
            "precision": (true & kept).sum() / kept.sum(),
            "recall": (true & kept).sum() / OBJECTS_PER_CLASS,
        }
    return expected


def test_the_hand_counts_differ_between_the_two_operating_points():
    # circle: 3 kept (2 right) at its 0.6, 4 (3 right) at 0.5; square: 4 (3 right) at 0.2, 2 (1 right) at 0.5.
    assert _by_hand(THRESHOLDS)["circle"] == {"predicted": 3, "precision": 2 / 3, "recall": 0.5}
    assert _by_hand(THRESHOLDS)["square"] == {"predicted": 4, "precision": 0.75, "recall": 0.75}
    assert _by_hand({"circle": GLOBAL, "square": GLOBAL})["square"] == {
        "predicted": 2,
        "precision": 0.5,
        "recall": 0.25,
    }


def _coco_json(tmp_path, ids: dict) -> str:
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in range(1, 5)]
    annotations = []
    for image in images:
        for name, box in (("circle", CIRCLE_BOX), ("square", SQUARE_BOX)):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": ids[name],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for n, i in ids.items()]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def _results(tmp_path, ids: dict) -> str:
    results = [
        {"image_id": image, "category_id": ids[name], "bbox": box, "score": score}
        for image, name, score, box in DETECTIONS
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return str(path)


def _calibration(tmp_path, names=("circle", "square"), thresholds=THRESHOLDS, name="calibration.json") -> str:
    fitted = norcal.Calibration(
        gamma=0.0,
        class_names=list(names),
        class_counts=[10] * len(names),
        score_thresholds=None if thresholds is None else [thresholds[n] for n in names],
        threshold_fit={"rule": "f1"} if thresholds else {},
        source={"model_dir": "runs/cure"},
    )
    path = tmp_path / name
    norcal.save(fitted, str(path))
    return str(path)


def _eval(*extra) -> int:
    return cli.main(["eval", "--score-threshold", str(GLOBAL), "--quiet", "--images-per-class", "0", *extra])


# COCO ids 7 and 3, not 1..K, and in the other order than the calibration's classes: matched by name.
COCO_IDS = {"circle": 7, "square": 3}


def test_coco_json_detections_are_measured_at_the_calibration_thresholds(tmp_path, capsys):
    gt, results, calibration = _coco_json(tmp_path, COCO_IDS), _results(tmp_path, COCO_IDS), _calibration(tmp_path)
    code = _eval("--detections", results, "--data", gt, "--calibration", calibration, "--output", str(tmp_path / "at"))
    assert code == 0, capsys.readouterr().err
    assert f"operating point: per-class score thresholds (--calibration {calibration}, f1)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "at" / "metrics.json").read_text())
    for name, expected in _by_hand(THRESHOLDS).items():
        row = metrics["per_class"][name]
        assert row["score_threshold"] == THRESHOLDS[name]
        assert row["predicted"] == expected["predicted"], name
        assert row["precision"] == pytest.approx(expected["precision"]), name
        assert row["recall"] == pytest.approx(expected["recall"]), name

    # The same file without --calibration (and with --no-class-thresholds): the global threshold.
    for extra, out in (([], "global"), (["--calibration", calibration, "--no-class-thresholds"], "ignored")):
        assert _eval("--detections", results, "--data", gt, "--output", str(tmp_path / out), *extra) == 0
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        for name, expected in _by_hand({"circle": GLOBAL, "square": GLOBAL}).items():
            row = metrics["per_class"][name]
            assert row["score_threshold"] == GLOBAL
            assert (row["predicted"], row["recall"]) == (expected["predicted"], pytest.approx(expected["recall"]))
    assert "thresholds ignored" in metrics["operating_point"]["name"]


def _records(tmp_path, names) -> str:
    """The same ground truth as TFRecords with label_map.json (contiguous ids 1..K in `names` order)."""
    import tensorflow as tf
    from test_eval_report import _example

    from tfmaskrcnn.data.label_map import LabelMap

    LabelMap(names=tuple(names), coco_ids=tuple(range(1, len(names) + 1))).save(str(tmp_path / "label_map.json"))
    masks = []
    for x, y, w, h in (CIRCLE_BOX, SQUARE_BOX):
        mask = np.zeros((100, 100), np.uint8)
        mask[y : y + h, x : x + w] = 1
        masks.append(mask)
    classes = [names.index("circle") + 1, names.index("square") + 1]
    with tf.io.TFRecordWriter(str(tmp_path / "val-00000-of-00001.tfrecord")) as writer:
        for image_id in range(1, 5):
            writer.write(_example(image_id, 100, 100, [CIRCLE_BOX, SQUARE_BOX], classes, masks))
    return str(tmp_path / "val-*.tfrecord")


def test_tfrecord_detections_are_measured_at_the_calibration_thresholds(tmp_path, capsys):
    names = ["circle", "square"]
    data = _records(tmp_path, names)
    ids = {n: i for i, n in enumerate(names, start=1)}
    code = _eval(
        "--detections", _results(tmp_path, ids), "--data", data, "--calibration", _calibration(tmp_path),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name, expected in _by_hand(THRESHOLDS).items():
        row = metrics["per_class"][name]
        assert (row["predicted"], row["precision"], row["recall"]) == (
            expected["predicted"],
            pytest.approx(expected["precision"]),
            pytest.approx(expected["recall"]),
        ), name


def test_tfrecords_whose_label_map_orders_the_classes_otherwise_are_refused(tmp_path, capsys):
    names = ["square", "circle"]  # the calibration's classes are circle, square: ids would be swapped
    data = _records(tmp_path, names)
    ids = {n: i for i, n in enumerate(names, start=1)}
    calibration = _calibration(tmp_path)
    code = _eval(
        "--detections", _results(tmp_path, ids), "--data", data, "--calibration", calibration,
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert calibration in error and "['circle', 'square']" in error and "['square', 'circle']" in error
    assert "label_map.json" in error and "calibration.json of the model that produced --detections" in error
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_refusals_name_the_file_what_is_missing_and_the_fix(tmp_path, capsys):
    gt, results = _coco_json(tmp_path, COCO_IDS), _results(tmp_path, COCO_IDS)

    no_thresholds = _calibration(tmp_path, thresholds=None, name="gamma_only.json")
    assert (
        _eval("--detections", results, "--data", gt, "--calibration", no_thresholds, "--output", str(tmp_path / "o"))
        == 2
    )
    error = capsys.readouterr().err
    assert no_thresholds in error and "no per-class score thresholds" in error
    assert "tfmaskrcnn calibrate --model_dir runs/cure" in error and "--thresholds f1" in error

    other_classes = _calibration(
        tmp_path, names=("circle", "triangle"), thresholds={"circle": 0.6, "triangle": 0.2}, name="other.json"
    )
    assert (
        _eval("--detections", results, "--data", gt, "--calibration", other_classes, "--output", str(tmp_path / "o"))
        == 2
    )
    error = capsys.readouterr().err
    assert other_classes in error and "'triangle'" in error and "the categories of --data" in error

    missing = str(tmp_path / "nowhere.json")
    assert _eval("--detections", results, "--data", gt, "--calibration", missing, "--output", str(tmp_path / "o")) == 2
    assert f"--calibration {missing}: file not found" in capsys.readouterr().err

    assert (
        _eval(
            "--model_dir", str(tmp_path), "--data", gt, "--calibration", no_thresholds, "--output", str(tmp_path / "o")
        )
        == 2
    )
    assert "--calibration goes with --detections" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
