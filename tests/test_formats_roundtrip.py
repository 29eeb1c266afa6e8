"""One dataset written by every labelling tool's layout converts to the same records.

The objects of `format_exports.make_dataset` (3 classes, overlapping boxes, 3 negative
images out of 10) are written as COCO, Labelme, CVAT for images 1.1 (one instance as a
CVAT RLE mask), Ultralytics YOLO-seg and Pascal VOC instance PNGs (with VOC's void band),
converted with `tfmaskrcnn convert` (format detected), read back with Model Garden's
decoder, and compared record by record with the COCO conversion: same images, same
classes, boxes within a pixel, mask IoU >= 0.98.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from format_exports import CLASSES, make_dataset, write_all
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

from tfmaskrcnn.cli import main as cli_main
from tfmaskrcnn.data.label_map import LabelMap

FORMATS = ("labelme", "cvat", "yolo", "voc")


def read_records(folder) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """{image file name: [(class name, box ymin xmin ymax xmax in pixels, mask)]} of a converted folder."""
    decoder = TfExampleDecoder(include_mask=True)
    extra = {
        "image/filename": tf.io.FixedLenFeature((), tf.string),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
    }
    records = {}
    for serialized in tf.data.TFRecordDataset(sorted(str(p) for p in folder.glob("*.tfrecord"))):
        decoded = {k: v.numpy() for k, v in decoder.decode(serialized).items()}
        names = tf.io.parse_single_example(serialized, extra)
        texts = [t.decode() for t in tf.sparse.to_dense(names["image/object/class/text"]).numpy()]
        height, width = decoded["height"], decoded["width"]
        boxes = decoded["groundtruth_boxes"] * np.array([height, width, height, width])
        masks = decoded["groundtruth_instance_masks"].astype(np.uint8)
        records[names["image/filename"].numpy().decode()] = list(zip(texts, boxes, masks))
    return records


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    exports = write_all(root / "exports", make_dataset())
    outputs = {}
    for name, export in exports.items():
        output = root / "records" / name
        argv = ["convert", "--annotations", export["annotations"], "--output", str(output), "--no-progress"]
        argv += ["--images", export["images"]] if "images" in export else []
        argv += ["--split", export["split"]] if "split" in export else []
        assert cli_main(argv) == 0, name
        outputs[name] = output
    return outputs


def test_coco_reference_has_the_dataset(converted):
    records = read_records(converted["coco"])
    assert len(records) == 10
    assert sum(not objects for objects in records.values()) == 3  # negatives kept
    assert sum(len(objects) for objects in records.values()) == 24
    assert {name for objects in records.values() for name, _, _ in objects} == set(CLASSES)


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_format_gives_the_coco_records(converted, format_name):
    reference = read_records(converted["coco"])
    records = read_records(converted[format_name])
    assert sorted(records) == sorted(reference)
    assert set(LabelMap.load(str(converted[format_name] / "label_map.json")).names) == set(CLASSES)
    for file_name, expected in reference.items():
        got = list(records[file_name])
        assert len(got) == len(expected), file_name
        for name, box, mask in expected:
            candidates = [i for i, (n, _, _) in enumerate(got) if n == name]
            assert candidates, f"{format_name} {file_name}: no {name!r} instance"
            best = max(candidates, key=lambda i: mask_iou(got[i][2], mask))
            other_name, other_box, other_mask = got.pop(best)
            assert mask_iou(other_mask, mask) >= 0.98, (format_name, file_name, name)
            np.testing.assert_allclose(other_box, box, atol=1.0, err_msg=f"{format_name} {file_name} {name}")


@pytest.mark.parametrize("format_name", FORMATS)
def test_import_report_counts_the_negatives_and_keeps_the_coco_form(converted, format_name):
    report = json.loads((converted[format_name] / "import_report.json").read_text())
    assert report["source_format"] == format_name
    assert report["totals"] == {"images": 10, "negative_images": 3, "annotations": 24, "categories": 3}
    assert report["skipped"] == {}
    imported = json.loads((converted[format_name] / "imported_annotations.json").read_text())
    assert len(imported["images"]) == 10 and len(imported["annotations"]) == 24
    conversion = json.loads((converted[format_name] / "conversion_report.json").read_text())
    assert conversion["totals"]["images_out"] == 10 and conversion["totals"]["annotations_out"] == 24
