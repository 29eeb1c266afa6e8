"""Real exports convert as downloaded: Roboflow's car-damage subset (tests/data/car_damage_mini,
CC BY 4.0, see its SOURCE.md) with its unused parent category id 0, and the id traps of other tools."""

from __future__ import annotations

import collections
import json
import pathlib

import pytest
from PIL import Image

from tfmaskrcnn.data.categories import CategoryOptions
from tfmaskrcnn.data.convert import convert_coco, convert_coco_dict, default_prefix
from tfmaskrcnn.data.label_map import LabelMap

CAR_DAMAGE = pathlib.Path(__file__).parent / "data" / "car_damage_mini"
CAR_CLASSES = ["airbag", "astar", "cam_catlagi", "cizik", "far_hasar", "gocuk", "kaput_hasar", "kirik-kayip"]


@pytest.mark.parametrize("split", ["train", "valid"])
def test_car_damage_converts_as_downloaded(split, tmp_path):
    annotations = CAR_DAMAGE / split / "_annotations.coco.json"
    data = json.loads(annotations.read_text())
    report = convert_coco(str(annotations), str(CAR_DAMAGE / split), str(tmp_path), progress=False)
    assert report.published and report.num_skipped == 0 and report.prefix == split
    label_map = LabelMap.load(str(tmp_path / "label_map.json"))
    assert list(label_map.names) == CAR_CLASSES and list(label_map.coco_ids) == list(range(1, 9))
    saved = json.loads((tmp_path / "conversion_report.json").read_text())
    assert [(c["id"], c["name"]) for c in saved["categories"]["left_out"]] == [(0, "car")]
    assert report.num_images_out == len(data["images"])
    assert report.num_annotations_out == len(data["annotations"])
    expected = collections.Counter(a["category_id"] for a in data["annotations"])
    assert {c["name"]: c["instances"] for c in report.stats["classes"]} == {
        name: expected[i] for i, name in enumerate(CAR_CLASSES, start=1)
    }


def _tiny_images(folder: pathlib.Path, count: int) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, count + 1):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(folder / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 32, "height": 32})
    return images


def _square(ann_id, image_id, category_id, iscrowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [4, 4, 10, 10],
        "area": 100,
        "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]],
        "iscrowd": iscrowd,
    }


def test_zero_indexed_ids_map_to_one_based_classes(tmp_path):
    images = _tiny_images(tmp_path / "img", 3)
    categories = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}, {"id": 2, "name": "c"}]
    annotations = [_square(1, 1, 0), _square(2, 2, 1), _square(3, 3, 2)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    report = convert_coco_dict(data, str(tmp_path / "img"), str(tmp_path / "out"), progress=False)
    assert report.prefix == "img" and report.num_annotations_out == 3
    label_map = LabelMap.load(str(tmp_path / "out" / "label_map.json"))
    assert list(label_map.names) == ["a", "b", "c"] and list(label_map.coco_ids) == [0, 1, 2]


def test_background_category_left_out_and_class_map_merges_and_drops(tmp_path):
    images = _tiny_images(tmp_path / "img", 4)
    categories = [
        {"id": 0, "name": "_background_"},
        {"id": 1, "name": "car"},
        {"id": 2, "name": "auto"},
        {"id": 3, "name": "junk"},
    ]
    annotations = [_square(1, 1, 1), _square(2, 2, 2), _square(3, 3, 3)]  # image 4: a negative
    data = {"images": images, "annotations": annotations, "categories": categories}
    options = CategoryOptions(class_map={"auto": "car", "junk": None})
    report = convert_coco_dict(data, str(tmp_path / "img"), str(tmp_path / "out"), progress=False, categories=options)
    label_map = LabelMap.load(str(tmp_path / "out" / "label_map.json"))
    assert list(label_map.names) == ["car"] and label_map.to_contiguous(2) == 1
    assert report.counts_of("dropped") == {"category_dropped": 1}
    assert report.num_images_out == 4 and report.stats["images_without_instances"] == 2
    assert [c["name"] for c in report.categories["left_out"]] == ["_background_"]
    assert {r["from"]: r["annotations"] for r in report.categories["class_map"]} == {"auto": 1, "junk": 1}


def test_crowd_as_instances_trains_brush_class(tmp_path):
    images = _tiny_images(tmp_path / "img", 2)
    categories = [{"id": 1, "name": "cell"}, {"id": 2, "name": "blob"}]
    annotations = [_square(1, 1, 1), _square(2, 2, 2, iscrowd=1)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    kept = convert_coco_dict(data, str(tmp_path / "img"), str(tmp_path / "keep"), progress=False)
    assert kept.stats["num_crowd"] == 1
    blob = kept.stats["classes"][1]
    assert (blob["name"], blob["instances"], blob["crowd"]) == ("blob", 0, 1)
    assert "class 'blob': all 1 of its annotations are crowd" in kept.format_table()
    assert "--crowd as-instances" in kept.format_table()
    as_instances = convert_coco_dict(
        data, str(tmp_path / "img"), str(tmp_path / "inst"), progress=False, crowd="as-instances"
    )
    assert as_instances.stats["num_crowd"] == 0 and as_instances.counts["crowd_as_instance"] == 1
    assert "are crowd" not in as_instances.format_table()
    skipped = convert_coco_dict(data, str(tmp_path / "img"), str(tmp_path / "skip"), progress=False, crowd="skip")
    assert skipped.num_annotations_out == 1 and skipped.counts["crowd_skipped"] == 1


def test_default_prefix_of_roboflow_file():
    assert default_prefix("/x/train/_annotations.coco.json") == "train"
    assert default_prefix("/x/instances_val2017.json") == "instances_val2017"


def test_class_map_and_crowd_through_the_command(tmp_path, capsys):
    """README: `tfmaskrcnn convert ... --class-map classes.yaml --crowd as-instances` on a CVAT-like export."""
    from tfmaskrcnn import cli

    images = _tiny_images(tmp_path / "images", 3)
    categories = [{"id": 1, "name": "car"}, {"id": 2, "name": "auto"}, {"id": 3, "name": "blob"}]
    annotations = [_square(1, 1, 1), _square(2, 2, 2), _square(3, 3, 3, iscrowd=1)]  # 'blob': brush, crowd
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    (tmp_path / "classes.yaml").write_text("auto: car\n")
    argv = ["convert", "--annotations", str(path), "--images", str(tmp_path / "images")]
    argv += ["--output", str(tmp_path / "out"), "--class-map", str(tmp_path / "classes.yaml")]
    assert cli.main(argv + ["--crowd", "as-instances", "--no-progress"]) == 0
    stats = json.loads((tmp_path / "out" / "dataset_stats.json").read_text())
    assert [(c["name"], c["instances"]) for c in stats["classes"]] == [("car", 2), ("blob", 1)]
    assert stats["num_crowd"] == 0
    assert "class map 'auto' -> 'car': 1 annotation(s)" in capsys.readouterr().out
