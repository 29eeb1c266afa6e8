"""Every kind of bad input, in one tiny dataset: each record is written, repaired or skipped and counted.

The dataset is built with Pillow in tmp_path. The test asserts the exact count of each
reason, that every valid image and annotation reached the TFRecords, that converted
images come out as 8-bit RGB, and that `--strict` fails the command.
"""

from __future__ import annotations

import io
import json
import logging
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfmaskrcnn import cli
from tfmaskrcnn.data.coco import REASONS, CocoFormatError
from tfmaskrcnn.data.convert import ConversionError, convert_coco

W, H = 32, 24


def square(x0=4, y0=4, x1=14, y1=14):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def ann(ann_id, image_id, category_id=1, bbox=(4, 4, 10, 10), segmentation="square", **extra):
    record = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "area": 100.0,
        "bbox": list(bbox) if bbox is not None else None,
        "segmentation": square() if segmentation == "square" else segmentation,
    }
    record.update(extra)
    return record


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path.name


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    rgb = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    save(Image.fromarray(rgb), images / "good.jpg")
    save(Image.fromarray(rgb), images / "inside.jpg")
    save(Image.fromarray(rgb), images / "nosize.jpg")
    save(Image.fromarray(rgb), images / "negative.jpg")
    save(Image.fromarray(rgb), images / "wrong_size.jpg")
    save(Image.fromarray(rgb), root / "outside.jpg")
    save(Image.new("L", (W, H), 77), images / "gray.png")
    save(Image.new("RGBA", (W, H), (10, 20, 30, 0)), images / "rgba.png")
    save(Image.new("CMYK", (W, H), (0, 255, 255, 0)), images / "cmyk.jpg")
    save(Image.fromarray(np.full((H, W), 32896, np.uint16)), images / "gray16.png")
    save(Image.fromarray(rgb).convert("P"), images / "palette.png")
    save(Image.fromarray(rgb), images / "bitmap.bmp")
    save(Image.new("F", (W, H), 0.5), images / "float.tif")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    (images / "corrupt.jpg").write_bytes(buffer.getvalue()[:200])

    image_list = [
        {"id": 1, "file_name": "good.jpg", "width": W, "height": H},
        {"id": 2, "file_name": "gray.png", "width": W, "height": H},
        {"id": 3, "file_name": "rgba.png", "width": W, "height": H},
        {"id": 4, "file_name": "cmyk.jpg", "width": W, "height": H},
        {"id": 5, "file_name": "gray16.png", "width": W, "height": H},
        {"id": 6, "file_name": "palette.png", "width": W, "height": H},
        {"id": 7, "file_name": "bitmap.bmp", "width": W, "height": H},
        {"id": 8, "file_name": "nested/../inside.jpg", "width": W, "height": H},  # stays inside: fine
        {"id": 9, "file_name": "nosize.jpg"},
        {"id": 10, "file_name": "negative.jpg", "width": W, "height": H},
        {"id": 20, "file_name": "missing.jpg", "width": W, "height": H},
        {"id": 21, "file_name": "corrupt.jpg", "width": W, "height": H},
        {"id": 22, "file_name": "float.tif", "width": W, "height": H},
        {"id": 23, "file_name": "wrong_size.jpg", "width": 50, "height": 50},
        {"id": 24, "file_name": "../outside.jpg", "width": W, "height": H},
        {"id": 25, "file_name": "/etc/hostname", "width": W, "height": H},
        {"file_name": "good.jpg", "width": W, "height": H},  # no id
    ]
    annotations = [
        ann(100, 1),
        ann(101, 1, bbox=(20, 15, 20, 20)),  # leaves the image: clipped to (20, 15, 32, 24)
        ann(102, 1, bbox=(4, 4, 0.5, 10)),  # under 1 px wide
        ann(103, 1, segmentation=[[1, 1, 5, 5]]),  # two points
        ann(104, 1, segmentation={"size": [H, W], "counts": [H * W]}),  # no pixel set
        ann(105, 1, category_id=0),
        ann(106, 1, category_id=77),
        ann(100, 1),  # duplicate annotation id
        ann(107, 999),  # unknown image
        ann(108, 1, bbox=None),
        ann(109, 1, segmentation=None),
        ann(110, 1, segmentation={"size": [10, 10], "counts": [100]}),  # RLE of another size
        ann(111, 1, segmentation=square() + [[0, 0, 1, 1]]),  # one part dropped, one kept
        ann(112, 1, category_id="1"),
        ann(113, 1, segmentation={"size": [H, W], "counts": "0Q9"}),  # damaged compressed RLE
        ann(
            114, 1, category_id=3, iscrowd=1, segmentation={"size": [H, W], "counts": [100, 50, H * W - 150]}
        ),  # crowd of class "background"
        ann(200, 2),
        ann(300, 3),
        ann(400, 4),
        ann(500, 5),
        ann(600, 6),
        ann(700, 7),
        ann(800, 8),
        ann(900, 9, category_id=2),
        ann(1000, 10, bbox=(4, 4, 10, 0)),  # the negative image's only annotation: skipped, image kept
        ann(2000, 20),
        ann(2100, 21),
        ann(2101, 21),
        ann(2200, 22),
        ann(2300, 23),
        ann(2400, 24),
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "background"}]
    (root / "bad.json").write_text(
        json.dumps({"images": image_list, "annotations": annotations, "categories": categories})
    )
    return root


EXPECTED_COUNTS = {
    "image_missing": 1,
    "image_corrupt": 1,
    "image_unsupported_mode": 1,
    "image_size_mismatch": 1,
    "file_name_escapes_image_dir": 2,
    "image_record_invalid": 1,
    "annotation_of_skipped_image": 6,  # 2000, 2100, 2101, 2200, 2300, 2400
    "annotation_unknown_image": 1,
    "annotation_unknown_category": 1,
    "category_id_zero": 1,
    "duplicate_annotation_id": 1,
    "annotation_record_invalid": 1,
    "box_degenerate": 2,
    "box_invalid": 1,
    "polygon_too_few_points": 1,
    "mask_empty": 1,
    "segmentation_missing": 1,
    "segmentation_invalid": 2,
    "grayscale_converted": 1,
    "rgba_converted": 1,
    "cmyk_converted": 1,
    "16bit_converted": 1,
    "palette_converted": 1,
    "format_converted": 1,
    "box_out_of_bounds_clipped": 1,
    "polygon_part_dropped": 1,
    "image_size_missing": 1,
}
VALID_IMAGES = {
    1: [100, 101, 111, 114],
    2: [200],
    3: [300],
    4: [400],
    5: [500],
    6: [600],
    7: [700],
    8: [800],
    9: [900],
    10: [],
}


@pytest.fixture(scope="module")
def converted(bad_dataset):
    report = convert_coco(
        str(bad_dataset / "bad.json"),
        str(bad_dataset / "images"),
        str(bad_dataset / "out"),
        num_shards=2,
        workers=2,
        progress=False,
    )
    return report


def converted_output(report):
    return pathlib.Path(report.output_dir)


def read_records(output):
    keys = {
        "image/source_id": tf.io.FixedLenFeature((), tf.string),
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/format": tf.io.FixedLenFeature((), tf.string),
        "image/object/annotation_id": tf.io.VarLenFeature(tf.int64),
        "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
        "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    }
    records = {}
    for serialized in tf.data.TFRecordDataset(sorted(str(p) for p in output.glob("*.tfrecord"))):
        parsed = tf.io.parse_single_example(serialized, keys)
        parsed = {
            k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy() for k, v in parsed.items()
        }
        records[int(parsed["image/source_id"])] = parsed
    return records


def test_every_reason_is_counted_exactly(converted):
    # The dataset exercises the whole vocabulary but what only options cause (tests/test_convert_real_exports.py)
    # and repeated image ids, which the converter refuses (test_duplicate_image_ids_are_refused).
    assert set(EXPECTED_COUNTS) == set(REASONS) - {
        "category_dropped",
        "crowd_skipped",
        "crowd_as_instance",
        "duplicate_image_id",
    }
    assert converted.counts == EXPECTED_COUNTS
    saved = json.loads((converted_output(converted) / "conversion_report.json").read_text())
    skipped_annotations = sum(n for r, n in EXPECTED_COUNTS.items() if REASONS[r][0] == "annotation_skipped")
    skipped_images = sum(n for r, n in EXPECTED_COUNTS.items() if REASONS[r][0] == "image_skipped")
    # every input record is either written or skipped for exactly one reason
    assert saved["totals"] == {
        "images_in": 17,
        "images_out": 17 - skipped_images,
        "annotations_in": 31,
        "annotations_out": 31 - skipped_annotations,
    }
    assert saved["totals"]["images_out"] == len(VALID_IMAGES)
    assert saved["totals"]["annotations_out"] == sum(len(a) for a in VALID_IMAGES.values())
    assert saved["converted"]["cmyk_converted"] == 1 and saved["fixed"]["box_out_of_bounds_clipped"] == 1
    example = saved["examples"]["image_size_mismatch"][0]
    assert example["file"] == "wrong_size.jpg" and example["image_id"] == 23 and "50x50" in example["message"]
    example = saved["examples"]["category_id_zero"][0]
    assert (example["file"], example["image_id"], example["annotation_id"]) == ("good.jpg", 1, 105)


def test_every_valid_image_and_annotation_is_written(converted):
    records = read_records(converted_output(converted))
    assert {i: list(r["image/object/annotation_id"]) for i, r in records.items()} == VALID_IMAGES
    assert converted.num_images_out == len(VALID_IMAGES)
    assert converted.num_annotations_out == sum(len(a) for a in VALID_IMAGES.values())
    good = records[1]
    assert good["image/object/bbox/xmax"][1] == pytest.approx(1.0)  # clipped at the right edge
    assert list(good["image/object/is_crowd"]) == [0, 0, 0, 1]


def test_converted_images_are_8bit_rgb(converted, bad_dataset):
    records = read_records(converted_output(converted))
    decoded = {i: Image.open(io.BytesIO(r["image/encoded"])) for i, r in records.items()}
    for image_id in (2, 3, 4, 5, 6, 7):
        assert decoded[image_id].mode == "RGB", image_id
        pixels = tf.io.decode_image(records[image_id]["image/encoded"]).numpy()
        assert pixels.shape == (H, W, 3) and pixels.dtype == np.uint8
    assert records[2]["image/format"] == b"png" and np.all(np.asarray(decoded[2]) == 77)
    assert np.all(np.asarray(decoded[5]) == 128)  # 16-bit 32896 scaled to 8 bits, not clipped to 255
    assert np.all(np.asarray(decoded[3]) == (10, 20, 30))  # alpha dropped
    assert records[4]["image/format"] == b"jpeg"
    assert records[7]["image/format"] == b"png"  # BMP re-encoded losslessly
    # untouched RGB JPEGs keep their bytes
    assert records[1]["image/encoded"] == (bad_dataset / "images" / "good.jpg").read_bytes()


def test_strict_cli_fails_and_publishes_nothing(bad_dataset, capsys):
    output = bad_dataset / "strict_out"
    argv = [
        "convert",
        "--annotations",
        str(bad_dataset / "bad.json"),
        "--images",
        str(bad_dataset / "images"),
        "--output",
        str(output),
        "--strict",
        "--no-progress",
    ]
    assert cli.main(argv) == 1
    printed = capsys.readouterr().out
    assert "image_missing" in printed and "shards NOT written" in printed
    assert sorted(p.name for p in output.iterdir()) == ["conversion_report.json"]
    assert json.loads((output / "conversion_report.json").read_text())["published"] is False
    # Without --strict the same input converts and exits 0.
    assert cli.main(argv[:-2] + ["--no-progress"]) == 0


def test_strict_accepts_conversions_and_fixes(bad_dataset, tmp_path):
    data = json.loads((bad_dataset / "bad.json").read_text())
    data["images"] = [i for i in data["images"] if i.get("id") in (2, 5, 9)]  # converted / size-filled images
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (200, 500, 900)]
    (tmp_path / "clean.json").write_text(json.dumps(data))
    argv = [
        "convert",
        "--annotations",
        str(tmp_path / "clean.json"),
        "--images",
        str(bad_dataset / "images"),
        "--output",
        str(tmp_path / "out"),
        "--strict",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    assert len(list((tmp_path / "out").glob("clean-*.tfrecord"))) == 1


def test_background_named_category_warns(bad_dataset, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        convert_coco(str(bad_dataset / "bad.json"), str(bad_dataset / "images"), str(tmp_path), progress=False)
    assert "'background'" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [', "not valid JSON at line 1"),
        (json.dumps({"images": [], "annotations": []}), '"categories" must be a list'),
        (json.dumps({"images": [], "annotations": [], "categories": []}), "non-empty list"),
    ],
)
def test_unusable_annotation_files_raise_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(CocoFormatError, match=message) as error:
        convert_coco(str(path), str(tmp_path / "images"), str(tmp_path / "out"), progress=False)
    assert str(path) in str(error.value)


def test_missing_image_directory_fails_fast(bad_dataset, tmp_path, capsys):
    with pytest.raises(ConversionError, match="--images"):
        convert_coco(str(bad_dataset / "bad.json"), str(tmp_path / "nope"), str(tmp_path / "out"))
    argv = [
        "convert",
        "--annotations",
        str(bad_dataset / "bad.json"),
        "--images",
        str(tmp_path / "nope"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_duplicate_image_ids_are_refused(bad_dataset, tmp_path, capsys):
    # mmdetection #10666: a one-off export script gave two photos one id, and the second photo's objects were
    # trained on the first. Nothing says which image an annotation of that id was drawn on: refuse, naming both.
    data = json.loads((bad_dataset / "bad.json").read_text())
    data["images"].append({"id": 2, "file_name": "inside.jpg", "width": W, "height": H})
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError) as error:
        convert_coco(str(path), str(bad_dataset / "images"), str(tmp_path / "out"), progress=False)
    message = str(error.value)
    assert str(path) in message and "image id 2" in message
    assert "'gray.png'" in message and "'inside.jpg'" in message and "unique id" in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tfrecord"))
    argv = ["convert", "--annotations", str(path), "--images", str(bad_dataset / "images")]
    assert cli.main(argv + ["--output", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "image id 2 is used by" in capsys.readouterr().err
