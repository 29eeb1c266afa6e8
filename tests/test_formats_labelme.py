"""Labelme import: group_id merges parts, rectangles and lines are skipped with a count, negatives kept."""

from __future__ import annotations

import json

import pytest
from format_exports import Img, labelme_shape, make_dataset, write_labelme, write_labelme_file

from tfmaskrcnn.data.formats import ExportFormatError, load_export

SQUARE = [(10, 10), (30, 10), (30, 30), (10, 30)]
OTHER_SQUARE = [(50, 40), (70, 40), (70, 60), (50, 60)]


def _folder(tmp_path, shapes_by_stem: dict[str, list[dict]]):
    image = make_dataset(num_images=1, num_negative=0)[0]
    for stem, shapes in shapes_by_stem.items():
        write_labelme(tmp_path, [Img(stem, [], image.pixels)])  # the image file
        write_labelme_file(tmp_path, stem, shapes)
    return tmp_path


def test_group_id_merges_the_parts_of_one_instance(tmp_path):
    folder = _folder(
        tmp_path,
        {
            "a": [
                labelme_shape("car", SQUARE, group_id=1),
                labelme_shape("car", OTHER_SQUARE, group_id=1),  # same object, split by an occluder
                labelme_shape("car", OTHER_SQUARE, group_id=2),
                labelme_shape("person", SQUARE, group_id=1),  # same group_id, other label: another object
                labelme_shape("car", SQUARE),  # no group: its own instance
            ]
        },
    )
    imported = load_export("labelme", str(folder))
    annotations = imported.coco["annotations"]
    assert len(annotations) == 4
    merged = annotations[0]
    assert len(merged["segmentation"]) == 2
    assert merged["bbox"] == [10.0, 10.0, 60.0, 50.0]  # spans both parts
    assert imported.counts == {"labelme_group_merged": 1}
    names = {c["id"]: c["name"] for c in imported.coco["categories"]}
    assert [names[a["category_id"]] for a in annotations] == ["car", "car", "person", "car"]


def test_rectangles_and_lines_are_skipped_with_a_count_and_circles_kept(tmp_path):
    folder = _folder(
        tmp_path,
        {
            "a": [
                labelme_shape("car", SQUARE),
                labelme_shape("car", [(0, 0), (20, 20)], shape_type="rectangle"),
                labelme_shape("road", [(0, 0), (20, 20), (40, 5)], shape_type="linestrip"),
                labelme_shape("ball", [(40, 40), (40, 50)], shape_type="circle"),
            ],
            "only_boxes": [labelme_shape("car", [(0, 0), (20, 20)], shape_type="rectangle")],
            "negative": [],
        },
    )
    imported = load_export("labelme", str(folder))
    assert imported.counts == {
        "labelme_rectangle_ignored": 2,
        "labelme_shape_ignored": 1,
        "labelme_circle_to_polygon": 1,
        "labelme_image_only_unusable_shapes": 1,
    }
    # The image with only a box is not a negative: its car is there, unmasked.
    assert sorted(i["file_name"] for i in imported.coco["images"]) == ["a.png", "negative.png"]
    assert imported.num_negative_images == 1
    circle = imported.coco["annotations"][1]
    assert circle["bbox"] == pytest.approx([30, 30, 20, 20], abs=0.1)
    assert any("only_boxes.json shapes[0]" in e for e in imported.examples["labelme_rectangle_ignored"])
    assert "redraw it as a polygon" in imported.format_table()


def test_names_file_orders_the_classes_and_unlisted_labels_are_skipped(tmp_path):
    folder = _folder(tmp_path / "data", {"a": [labelme_shape("dog", SQUARE), labelme_shape("cat", OTHER_SQUARE)]})
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes())  # an image nobody labelled yet
    names = tmp_path / "labels.txt"
    names.write_text("__ignore__\n_background_\ndog\nbird\n")
    imported = load_export("labelme", str(folder), names_file=str(names))
    assert [c["name"] for c in imported.coco["categories"]] == ["dog", "bird"]
    assert imported.counts == {"labelme_label_not_in_names": 1, "labelme_image_without_json": 1}
    assert [i["file_name"] for i in imported.coco["images"]] == ["a.png"]


def test_image_path_outside_the_json_folder_and_windows_separators(tmp_path):
    image = make_dataset(num_images=1, num_negative=0)[0]
    write_labelme(tmp_path / "images", [Img("x", [], image.pixels)])
    (tmp_path / "images" / "x.json").unlink()
    (tmp_path / "json").mkdir()
    write_labelme_file(tmp_path / "json", "x", [labelme_shape("car", SQUARE)], image_path="..\\images\\x.png")
    imported = load_export("labelme", str(tmp_path / "json"))
    assert imported.images_dir == str(tmp_path / "images")
    assert imported.coco["images"][0]["file_name"] == "x.png"


def test_broken_json_is_counted_with_its_file(tmp_path):
    folder = _folder(tmp_path, {"a": [labelme_shape("car", SQUARE)]})
    (folder / "broken.json").write_text("{not json")
    (folder / "config.json").write_text(json.dumps({"some": "settings"}))
    imported = load_export("labelme", str(folder))
    assert imported.counts == {"labelme_file_invalid": 2}
    assert any("broken.json" in e for e in imported.examples["labelme_file_invalid"])
    with pytest.raises(ExportFormatError, match="--images is not used"):
        load_export("labelme", str(folder), images_dir=str(folder))
