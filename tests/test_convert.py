"""COCO -> TFRecord conversion, read back with Model Garden's own decoder.

The real-photo test converts the COCO val2017 subset and checks every box, class and
mask against the JSON through pycocotools; the synthetic test covers each
segmentation encoding (multi-part polygons, uncompressed and compressed RLE, crowd).
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import tensorflow as tf
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tfmaskrcnn.data.convert import convert_coco
from tfmaskrcnn.data.label_map import LabelMap


def read_examples(shards):
    """(Model Garden decoded dict as numpy, raw parsed extra keys) for every record, in shard order."""
    decoder = TfExampleDecoder(include_mask=True)
    extra_keys = {
        "image/object/annotation_id": tf.io.VarLenFeature(tf.int64),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/format": tf.io.FixedLenFeature((), tf.string),
    }
    out = []
    for serialized in tf.data.TFRecordDataset([str(s) for s in shards]):
        decoded = {k: v.numpy() for k, v in decoder.decode(serialized).items()}
        extra = tf.io.parse_single_example(serialized, extra_keys)
        extra = {
            k: (tf.sparse.to_dense(v).numpy() if isinstance(v, tf.SparseTensor) else v.numpy())
            for k, v in extra.items()
        }
        out.append((decoded, extra))
    return out


def clipped_box(bbox, height, width):
    x, y, w, h = bbox
    return [max(y, 0), max(x, 0), min(y + h, height), min(x + w, width)]  # ymin, xmin, ymax, xmax


@pytest.fixture(scope="module")
def converted_val(coco_tiny_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("coco_val")
    annotations = coco_tiny_dir / "annotations" / "instances_val2017.json"
    report = convert_coco(str(annotations), str(coco_tiny_dir / "val2017"), str(output), num_shards=2, progress=False)
    return annotations, output, report


def test_real_coco_subset_round_trips_through_model_garden_decoder(coco_tiny_dir, converted_val):
    annotations, output, report = converted_val
    coco = COCO(str(annotations))
    assert report.num_skipped == 0 and report.published
    assert sorted(p.name for p in output.glob("*.tfrecord")) == [
        "instances_val2017-00000-of-00002.tfrecord",
        "instances_val2017-00001-of-00002.tfrecord",
    ]

    label_map = LabelMap.load(str(output / "label_map.json"))
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    assert label_map.num_classes == 80
    assert list(label_map.names) == [c["name"] for c in categories]
    assert label_map.name(1) == "person" and label_map.name(80) == "toothbrush"

    examples = read_examples(sorted(output.glob("*.tfrecord")))
    source_ids = [int(d["source_id"].decode()) for d, _ in examples]  # numeric, or int() raises
    assert sorted(source_ids) == sorted(coco.getImgIds())
    checked_masks = 0
    for decoded, extra in examples:
        image_info = coco.loadImgs(int(decoded["source_id"]))[0]
        height, width = image_info["height"], image_info["width"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"], iscrowd=None))
        assert decoded["image"].shape == (height, width, 3)
        # RGB JPEGs are stored byte for byte, not re-encoded.
        assert extra["image/encoded"] == (coco_tiny_dir / "val2017" / image_info["file_name"]).read_bytes()
        assert extra["image/format"] == b"jpeg"
        assert list(extra["image/object/annotation_id"]) == [a["id"] for a in anns]

        boxes = decoded["groundtruth_boxes"] * np.array([height, width, height, width])
        expected_boxes = np.array([clipped_box(a["bbox"], height, width) for a in anns]).reshape(-1, 4)
        np.testing.assert_allclose(boxes, expected_boxes, atol=1.0)
        names = [label_map.name(int(c)) for c in decoded["groundtruth_classes"]]
        assert names == [coco.loadCats(a["category_id"])[0]["name"] for a in anns]
        assert [t.decode() for t in extra["image/object/class/text"]] == names
        assert list(decoded["groundtruth_is_crowd"]) == [bool(a["iscrowd"]) for a in anns]
        np.testing.assert_allclose(decoded["groundtruth_area"], [a["area"] for a in anns], rtol=1e-5)

        masks = decoded["groundtruth_instance_masks"]
        assert masks.shape == (len(anns), height, width)
        assert set(np.unique(masks)) <= {0.0, 1.0}
        for mask, ann in zip(masks, anns):
            np.testing.assert_array_equal(mask, coco.annToMask(ann))
            checked_masks += 1
    assert checked_masks == len(coco.getAnnIds()) == 132


def test_real_coco_subset_statistics_and_report(converted_val):
    annotations, output, report = converted_val
    data = json.loads(annotations.read_text())
    stats = json.loads((output / "dataset_stats.json").read_text())
    crowd = sum(a["iscrowd"] for a in data["annotations"])
    assert stats["num_images"] == 13
    assert stats["num_crowd"] == crowd == 2
    assert stats["num_instances"] == len(data["annotations"]) - crowd
    per_class = collections.Counter(a["category_id"] for a in data["annotations"] if not a["iscrowd"])
    images_per_class = collections.Counter()
    for category_id, image_id in {(a["category_id"], a["image_id"]) for a in data["annotations"] if not a["iscrowd"]}:
        images_per_class[category_id] += 1
    assert {c["coco_id"]: c["instances"] for c in stats["classes"]} == {
        c["id"]: per_class[c["id"]] for c in data["categories"]
    }
    assert {c["coco_id"]: c["images"] for c in stats["classes"]} == {
        c["id"]: images_per_class[c["id"]] for c in data["categories"]
    }
    saved = json.loads((output / "conversion_report.json").read_text())
    assert saved["totals"] == {"images_in": 13, "images_out": 13, "annotations_in": 132, "annotations_out": 132}
    assert saved["skipped"] == {} and saved["converted"] == {} and saved["fixed"] == {}


# ---------------------------------------------------------------- synthetic set


def rectangle(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(mask):
    """COCO uncompressed RLE of a 0/1 mask, built by hand (column-major runs starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "images" / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "images" / "empty.png")

    crowd_mask = np.zeros((48, 64), np.uint8)
    crowd_mask[30:44, 5:25] = 1
    crowd_mask[35:40, 40:60] = 1
    blob = np.zeros((30, 40), np.uint8)
    blob[3:12, 20:33] = 1
    blob[8:10, 15:20] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    annotations = [
        {
            "id": 11,
            "image_id": 1,
            "category_id": 5,
            "iscrowd": 0,
            "area": 0,
            "segmentation": [rectangle(4, 4, 20, 16), rectangle(40, 6, 60, 26)],
            "bbox": [4, 4, 56, 22],
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 9,
            "iscrowd": 1,
            "area": 350.0,
            "segmentation": uncompressed_rle(crowd_mask),
            "bbox": [5, 30, 55, 14],
        },
        {
            "id": 21,
            "image_id": 2,
            "category_id": 5,
            "iscrowd": 0,
            "area": float(blob.sum()),
            "segmentation": {"size": [30, 40], "counts": compressed["counts"].decode()},
            "bbox": [15, 3, 18, 9],
        },
        {
            "id": 22,
            "image_id": 2,
            "category_id": 9,
            "iscrowd": 0,
            "area": 50.0,
            # The second part has two points only: dropped, the first part kept.
            "segmentation": [rectangle(2, 15, 12, 25), [1, 1, 3, 3]],
            "bbox": [2, 15, 10, 10],
        },
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
            {"id": 3, "file_name": "empty.png", "width": 20, "height": 20},
        ],
        "annotations": annotations,
        "categories": [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}],
    }
    (root / "shapes.json").write_text(json.dumps(data))
    report = convert_coco(
        str(root / "shapes.json"), str(root / "images"), str(root / "out"), num_shards=2, workers=2, progress=False
    )
    return root, data, report, {"crowd": crowd_mask, "blob": blob}


def test_synthetic_segmentation_encodings(synthetic):
    root, data, report, masks = synthetic
    examples = {int(d["source_id"]): (d, e) for d, e in read_examples(sorted((root / "out").glob("*.tfrecord")))}
    assert sorted(examples) == [1, 2, 3]
    coco = COCO(str(root / "shapes.json"))

    decoded, extra = examples[1]
    assert list(decoded["groundtruth_classes"]) == [1, 2]  # cat (COCO 5) -> 1, dog (COCO 9) -> 2
    assert [t.decode() for t in extra["image/object/class/text"]] == ["cat", "dog"]
    assert list(decoded["groundtruth_is_crowd"]) == [False, True]
    polygon_mask = decoded["groundtruth_instance_masks"][0]
    np.testing.assert_array_equal(polygon_mask, coco.annToMask(coco.anns[11]))
    assert polygon_mask[8, 10] == 1 and polygon_mask[15, 50] == 1 and polygon_mask[10, 30] == 0  # both parts
    assert abs(polygon_mask.sum() - (16 * 12 + 20 * 20)) < 0.15 * (16 * 12 + 20 * 20)
    # area 0 in the JSON -> the mask's pixel count is written instead
    assert decoded["groundtruth_area"][0] == polygon_mask.sum()
    np.testing.assert_array_equal(decoded["groundtruth_instance_masks"][1], masks["crowd"])
    assert extra["image/encoded"] == (root / "images" / "a.png").read_bytes() and extra["image/format"] == b"png"

    decoded, extra = examples[2]
    np.testing.assert_array_equal(decoded["groundtruth_instance_masks"][0], masks["blob"])
    np.testing.assert_allclose(decoded["groundtruth_boxes"][0] * [30, 40, 30, 40], [3, 15, 12, 33], atol=1e-4)
    part_mask = decoded["groundtruth_instance_masks"][1]
    assert part_mask[20, 7] == 1 and part_mask[:10, :10].sum() == 0

    decoded, extra = examples[3]  # an image without annotations is kept as a negative example
    assert decoded["groundtruth_classes"].shape == (0,)
    assert decoded["groundtruth_instance_masks"].shape == (0, 20, 20)

    assert report.counts == {"polygon_part_dropped": 1}
    stats = json.loads((root / "out" / "dataset_stats.json").read_text())
    assert stats["num_images"] == 3 and stats["num_instances"] == 3 and stats["num_crowd"] == 1
    assert stats["images_without_instances"] == 1
    assert [(c["name"], c["coco_id"], c["instances"], c["images"]) for c in stats["classes"]] == [
        ("cat", 5, 2, 2),
        ("dog", 9, 1, 1),
    ]


def test_rerun_is_deterministic_and_replaces_stale_shards(synthetic, tmp_path):
    root, _, _, _ = synthetic
    output = tmp_path / "out"
    convert_coco(str(root / "shapes.json"), str(root / "images"), str(output), num_shards=3, workers=2, progress=False)
    (output / "unrelated-00000-of-00001.tfrecord").write_bytes(b"")  # other prefix: left alone
    convert_coco(str(root / "shapes.json"), str(root / "images"), str(output), num_shards=2, workers=1, progress=False)
    assert sorted(p.name for p in output.iterdir()) == [
        "conversion_report.json",
        "dataset_stats.json",
        "label_map.json",
        "shapes-00000-of-00002.tfrecord",
        "shapes-00001-of-00002.tfrecord",
        "unrelated-00000-of-00001.tfrecord",
    ]
    for name in ("shapes-00000-of-00002.tfrecord", "shapes-00001-of-00002.tfrecord"):
        assert (output / name).read_bytes() == (root / "out" / name).read_bytes()  # 1 or 2 workers: same bytes


def test_conflicting_label_map_from_another_split_is_refused(synthetic, tmp_path):
    from tfmaskrcnn.data.convert import ConversionError

    root, data, _, _ = synthetic
    output = tmp_path / "out"
    convert_coco(str(root / "shapes.json"), str(root / "images"), str(output), num_shards=1, progress=False)
    other = dict(data, categories=[{"id": 5, "name": "cat"}, {"id": 9, "name": "wolf"}])
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConversionError, match="other classes"):
        convert_coco(str(tmp_path / "other.json"), str(root / "images"), str(output), progress=False)
    assert LabelMap.load(str(output / "label_map.json")).names == ("cat", "dog")
