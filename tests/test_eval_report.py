"""`tfmaskrcnn eval` and its report: files, CSV columns, --compare deltas, errors, TFRecord ground truth."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from simulated_detections import simulate_detections

from tfmaskrcnn import cli
from tfmaskrcnn.evaluation import report
from tfmaskrcnn.evaluation.evaluate import evaluate
from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset, directory_image_loader

EXPECTED_COLUMNS = [
    "class",
    "class_id",
    "gt_instances",
    "gt_images",
    "bbox_AP",
    "bbox_AP50",
    "bbox_AP75",
    "mask_AP",
    "mask_AP50",
    "mask_AP75",
    "precision",
    "recall",
    "f1",
    "predicted",
    "score_threshold",
]


def _no_nan(constant):
    raise AssertionError(f"metrics.json holds {constant}")


@pytest.fixture(scope="module")
def small_val(coco_tiny_dir, tmp_path_factory):
    """The first 12 validation images, plus a category without objects, as a COCO JSON."""
    with open(coco_tiny_dir / "annotations" / "instances_val2017.json") as f:
        dataset = json.load(f)
    keep = {image["id"] for image in sorted(dataset["images"], key=lambda i: i["id"])[:12]}
    dataset["images"] = [i for i in dataset["images"] if i["id"] in keep]
    dataset["annotations"] = [a for a in dataset["annotations"] if a["image_id"] in keep]
    dataset["categories"].append({"id": 1000, "name": "unicorn"})
    path = tmp_path_factory.mktemp("gt") / "val.json"
    path.write_text(json.dumps(dataset))
    return path, coco_from_dataset(dataset), coco_tiny_dir / "val2017"


@pytest.fixture(scope="module")
def two_runs(small_val, tmp_path_factory):
    """A healthy run, then a collapsed run compared against it."""
    _, coco_gt, image_dir = small_val
    healthy = simulate_detections(coco_gt, seed=0, drop_rate=0.1, box_jitter=0.05, false_positives_per_image=1)
    person = next(c for c in coco_gt.getCatIds() if coco_gt.cats[c]["name"] == "person")
    collapsed = [dict(d, category_id=person) for d in healthy]
    first, second = tmp_path_factory.mktemp("healthy"), tmp_path_factory.mktemp("collapsed")
    loader = directory_image_loader(coco_gt, str(image_dir))
    healthy_metrics = evaluate(
        coco_gt, healthy, output_dir=str(first), image_loader=loader, images_per_class=1, progress=False
    )
    collapsed_metrics = evaluate(
        coco_gt,
        collapsed,
        output_dir=str(second),
        compare_dir=str(first),
        image_loader=loader,
        images_per_class=1,
        progress=False,
    )
    return first, second, healthy_metrics, collapsed_metrics, coco_gt


def test_report_files_and_rows(two_runs):
    first, _, metrics, _, coco_gt = two_runs
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.png", "per_class_ap.png", "report.html"):
        assert (first / name).stat().st_size > 0, name
    assert (first / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(first.glob(".tmp-*")), "temporary files must be renamed away"

    on_disk = json.loads((first / "metrics.json").read_text(), parse_constant=_no_nan)
    assert set(on_disk["overall"]) == {"bbox", "segm"}
    assert on_disk["alarm"]["verdict"] == "ok"
    names = {c["name"] for c in coco_gt.loadCats(coco_gt.getCatIds())}
    assert set(on_disk["per_class"]) == names
    assert on_disk["per_class"]["unicorn"]["bbox_AP"] is None and on_disk["per_class"]["unicorn"]["gt_instances"] == 0
    matrix = np.array(on_disk["confusion"]["matrix"])
    assert matrix.shape == (len(names) + 1,) * 2 and on_disk["confusion"]["labels"][-1] == "background"

    with open(first / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == EXPECTED_COLUMNS
    assert {r["class"] for r in rows} == names
    unicorn = next(r for r in rows if r["class"] == "unicorn")
    assert unicorn["bbox_AP"] == "absent" and unicorn["mask_AP"] == "absent" and unicorn["recall"] == "absent"
    person = next(r for r in rows if r["class"] == "person")
    assert float(person["bbox_AP"]) == pytest.approx(metrics["per_class"]["person"]["bbox_AP"], abs=1e-6)
    assert int(person["gt_instances"]) == len(coco_gt.getAnnIds(catIds=[1], iscrowd=False))

    page = (first / "report.html").read_text()
    assert 'class="alarm ok"' in page
    assert page.count("data:image/png;base64,") == 2
    assert "data:image/jpeg;base64," in page, "example images from --images"
    assert all(f'id="class-{n}"' in page for n in ("person", "unicorn"))


def test_compare_deltas(two_runs):
    first, second, healthy, collapsed, _ = two_runs
    on_disk = json.loads((second / "metrics.json").read_text(), parse_constant=_no_nan)
    assert on_disk["alarm"]["verdict"] == "collapse"
    for name in ("person", "cup", "unicorn"):
        for metric in report.COMPARED_METRICS:
            entry = on_disk["compare"]["per_class"][name][metric]
            this, other = collapsed["per_class"][name][metric], healthy["per_class"][name][metric]
            assert entry["this"] == this and entry["other"] == other
            assert entry["delta"] == (None if this is None or other is None else pytest.approx(this - other))
    assert on_disk["compare"]["per_class"]["cup"]["bbox_AP"]["delta"] < 0
    assert on_disk["compare"]["overall"]["bbox"]["AP"]["delta"] == pytest.approx(
        collapsed["overall"]["bbox"]["AP"] - healthy["overall"]["bbox"]["AP"]
    )

    with open(second / "per_class.csv") as f:
        rows = {r["class"]: r for r in csv.DictReader(f)}
    assert list(rows["person"].keys())[: len(EXPECTED_COLUMNS)] == EXPECTED_COLUMNS
    expected = collapsed["per_class"]["cup"]["bbox_AP"] - healthy["per_class"]["cup"]["bbox_AP"]
    assert float(rows["cup"]["delta_bbox_AP"]) == pytest.approx(expected, abs=1e-6)
    assert float(rows["cup"]["other_bbox_AP"]) == pytest.approx(healthy["per_class"]["cup"]["bbox_AP"], abs=1e-6)
    page = (second / "report.html").read_text()
    assert 'class="alarm collapse"' in page and "&Delta; bbox_AP" in page


def test_per_class_thresholds_are_the_operating_point_and_compare_shows_both(two_runs, small_val, tmp_path):
    """Precision / recall / F1, predicted counts and the alarm at each class's own threshold; --compare
    puts the global operating point beside it."""
    first, _, healthy, _, coco_gt = two_runs
    names = {c: coco_gt.cats[c]["name"] for c in coco_gt.getCatIds()}
    person = next(c for c, n in names.items() if n == "person")
    detections = simulate_detections(coco_gt, seed=0, drop_rate=0.1, box_jitter=0.05, false_positives_per_image=1)
    person_scores = sorted(d["score"] for d in detections if d["category_id"] == person)
    high = person_scores[len(person_scores) // 2]  # half of person's detections reach it
    out = tmp_path / "thresholds"
    metrics = evaluate(
        coco_gt,
        detections,
        output_dir=str(out),
        compare_dir=str(first),
        class_thresholds={person: high},
        operating_point="per-class score thresholds (calibration.json)",
        warnings=["fitted on these records"],
        progress=False,
    )
    point = metrics["operating_point"]
    assert point["name"] == "per-class score thresholds (calibration.json)" and point["per_class_thresholds"]
    assert point["thresholds"]["person"] == high and point["thresholds"]["cup"] == 0.5
    row, before = metrics["per_class"]["person"], healthy["per_class"]["person"]
    assert row["score_threshold"] == high
    assert row["predicted"] == sum(d["score"] >= high for d in detections if d["category_id"] == person)
    assert row["predicted"] < before["predicted"] and row["recall"] < before["recall"]
    assert row["bbox_AP"] == before["bbox_AP"]  # AP ranks every score: the operating point does not change it
    for name in ("cup", "unicorn"):  # classes without their own threshold: as at the global one
        assert metrics["per_class"][name]["predicted"] == healthy["per_class"][name]["predicted"]
    compared = metrics["compare"]
    assert compared["operating_point"] == {
        "this": "per-class score thresholds (calibration.json)",
        "other": "global score threshold 0.5",
    }
    assert compared["per_class"]["person"]["score_threshold"]["other"] == 0.5
    assert compared["per_class"]["person"]["recall"]["delta"] < 0
    with open(out / "per_class.csv") as f:
        rows = {r["class"]: r for r in csv.DictReader(f)}
    assert float(rows["person"]["score_threshold"]) == pytest.approx(high)
    assert float(rows["person"]["other_score_threshold"]) == 0.5
    page = (out / "report.html").read_text()
    assert "per-class score thresholds (calibration.json)" in page and "fitted on these records" in page
    assert "global score threshold 0.5" in page


def test_command_line_with_coco_json(small_val, tmp_path, capsys):
    gt_path, coco_gt, _ = small_val
    detections = simulate_detections(coco_gt, seed=2, box_jitter=0.05, with_masks=False)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(detections))
    out = tmp_path / "out"
    code = cli.main(["eval", "--detections", str(results), "--data", str(gt_path), "--output", str(out), "--quiet"])
    assert code == 0
    assert "Collapse alarm: OK" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["overall"]) == {"bbox"}, "no masks in the results: box metrics only"
    assert metrics["per_class"]["person"]["mask_AP"] is None


def test_command_line_errors_name_the_problem(small_val, tmp_path, capsys):
    gt_path, coco_gt, _ = small_val
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": coco_gt.getImgIds()[0], "category_id": 1, "score": 0.9}]))
    code = cli.main(["eval", "--detections", str(results), "--data", str(gt_path), "--output", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "results.json" in error and "detection #0" in error and "bbox" in error


def _example(image_id, height, width, boxes, classes, masks):
    import tensorflow as tf
    from PIL import Image

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    boxes = np.asarray(boxes, dtype=np.float32)  # pixels [x, y, w, h]
    feature = {
        "image/encoded": strings([png(np.full((height, width, 3), 128))]),
        "image/source_id": strings([str(image_id).encode()]),
        "image/height": ints([height]),
        "image/width": ints([width]),
        "image/object/bbox/xmin": floats(boxes[:, 0] / width),
        "image/object/bbox/ymin": floats(boxes[:, 1] / height),
        "image/object/bbox/xmax": floats((boxes[:, 0] + boxes[:, 2]) / width),
        "image/object/bbox/ymax": floats((boxes[:, 1] + boxes[:, 3]) / height),
        "image/object/class/label": ints(classes),
        "image/object/is_crowd": ints([0] * len(classes)),
        "image/object/area": floats([float(m.sum()) for m in masks]),
        "image/object/mask": strings([png(m) for m in masks]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_ground_truth_uses_contiguous_ids_and_label_map_names(tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.evaluation.groundtruth import coco_from_tfrecords, tfrecord_image_loader

    LabelMap(names=("circle", "square"), coco_ids=(3, 7)).save(str(tmp_path / "label_map.json"))
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 1
    with tf.io.TFRecordWriter(str(tmp_path / "val-00000-of-00001.tfrecord")) as writer:
        writer.write(_example(5, 40, 60, [[20, 10, 30, 20]], [2], [mask]))
        writer.write(_example(9, 40, 60, [[20, 10, 30, 20], [0, 0, 10, 10]], [1, 2], [mask, mask * 0]))
    out = tmp_path / "out"
    code = cli.main(
        [
            "eval",
            "--detections",
            str(_tfrecord_results(tmp_path)),
            "--data",
            str(tmp_path / "val-*.tfrecord"),
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_class"]["square"]["class_id"] == 2 and metrics["per_class"]["square"]["gt_instances"] == 2
    assert metrics["per_class"]["circle"]["bbox_AP"] == pytest.approx(1.0)
    assert metrics["per_class"]["square"]["recall"] == pytest.approx(0.5)

    from tfmaskrcnn.data.label_map import LabelMap as Map

    coco_gt = coco_from_tfrecords(
        str(tmp_path / "*.tfrecord"), Map.load(str(tmp_path / "label_map.json")), progress=False
    )
    assert [c["name"] for c in coco_gt.loadCats([1, 2])] == ["circle", "square"]
    ann = coco_gt.imgToAnns[5][0]
    assert ann["bbox"] == pytest.approx([20, 10, 30, 20], abs=1e-3)
    assert coco_gt.annToMask(ann).sum() == mask.sum()
    images = tfrecord_image_loader(str(tmp_path / "*.tfrecord"))([9])
    assert set(images) == {9} and images[9].shape == (40, 60, 3)


def _tfrecord_results(tmp_path):
    """Circle found; of the two squares only the one on image 5 is found."""
    results = [
        {"image_id": 5, "category_id": 2, "bbox": [20, 10, 30, 20], "score": 0.9},
        {"image_id": 9, "category_id": 1, "bbox": [20, 10, 30, 20], "score": 0.8},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path
