"""Ultralytics YOLO-seg import: 0-indexed classes, box lines, pixel coordinates, splits, EXIF."""

from __future__ import annotations

import pytest
from format_exports import CLASSES, HEIGHT, WIDTH, make_dataset, write_yolo
from PIL import Image

from tfmaskrcnn.data.formats import ExportFormatError, load_export
from tfmaskrcnn.data.formats.yolo import label_path_of


def _write_labels(root, lines: str, stem: str = "img_00") -> None:
    (root / "labels" / "train" / f"{stem}.txt").write_text(lines)


def test_class_zero_is_the_first_name_not_background(tmp_path):
    data_yaml = write_yolo(tmp_path, make_dataset(num_images=2, num_negative=0), names_as_dict=True)
    _write_labels(tmp_path, "0 0.1 0.1 0.3 0.1 0.3 0.3\n2 0.5 0.5 0.7 0.5 0.7 0.7\n")
    imported = load_export("yolo", str(data_yaml), split="train")
    categories = {c["id"]: c["name"] for c in imported.coco["categories"]}
    assert categories == {1: "cat", 2: "dog", 3: "bird"}  # class i -> category i + 1, names kept
    first = [a for a in imported.coco["annotations"] if a["image_id"] == 1]
    assert [categories[a["category_id"]] for a in first] == ["cat", "bird"]
    x, y, w, h = first[0]["bbox"]
    assert (x, y, w, h) == pytest.approx((0.1 * WIDTH, 0.1 * HEIGHT, 0.2 * WIDTH, 0.2 * HEIGHT))


def test_bad_lines_are_skipped_with_file_and_line(tmp_path):
    data_yaml = write_yolo(tmp_path, make_dataset(num_images=3, num_negative=0))
    _write_labels(
        tmp_path,
        "0 0.1 0.1 0.3 0.1 0.3 0.3\n"
        "1 0.5 0.5 0.2 0.2\n"  # a detection box
        f"{len(CLASSES)} 0.1 0.1 0.3 0.1 0.3 0.3\n"  # 1-indexed by mistake: one past the last class
        "0 10 10 30 10 30 30\n"  # pixels, not fractions
        "0 0.1 0.1 0.3\n",
    )
    _write_labels(tmp_path, "1 0.5 0.5 0.2 0.2\n", stem="img_01")  # only a box: not a negative
    imported = load_export("yolo", str(data_yaml), split="train")
    assert imported.counts == {
        "yolo_box_line_ignored": 2,
        "yolo_class_out_of_range": 1,
        "yolo_not_normalized": 1,
        "yolo_line_invalid": 1,
        "yolo_image_only_unusable_lines": 1,
    }
    assert imported.examples["yolo_class_out_of_range"][0].endswith(
        "img_00.txt line 3: class 3 is not in names (0..2; YOLO classes start at 0)"
    )
    assert [i["file_name"] for i in imported.coco["images"]] == ["img_00.png", "img_02.png"]


def test_negatives_with_and_without_label_files_are_kept(tmp_path):
    data_yaml = write_yolo(tmp_path, make_dataset(num_images=5, num_negative=2))
    imported = load_export("yolo", str(tmp_path), split="train")  # the folder holding data.yaml works too
    assert len(imported.coco["images"]) == 5 and imported.num_negative_images == 2
    assert "1 image(s) without a label file and 1 with an empty one" in imported.notes[0]
    with pytest.raises(ExportFormatError, match="has splits train, val: pick one with --split"):
        load_export("yolo", str(data_yaml))


def test_roboflow_layout_and_exif_rotation(tmp_path):
    write_yolo(tmp_path / "train", make_dataset(num_images=2, num_negative=0))
    (tmp_path / "data.yaml").write_text("train: ../train/images/train\nnc: 3\nnames: ['cat', 'dog', 'bird']\n")
    rotated = tmp_path / "train" / "images" / "train" / "img_01.png"
    image = Image.open(rotated)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees": the labels were made on the rotated view
    image.save(rotated, exif=exif.tobytes())
    imported = load_export("yolo", str(tmp_path / "data.yaml"))
    assert [i["file_name"] for i in imported.coco["images"]] == ["img_00.png"]
    assert imported.counts == {"yolo_exif_rotated": 1}


def test_label_path_rule_is_ultralytics():
    assert label_path_of("/d/images/train/a.b.jpg") == "/d/labels/train/a.b.txt"
    assert label_path_of("/images/x/images/train/a.png") == "/images/x/labels/train/a.txt"
