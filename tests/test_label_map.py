"""LabelMap: COCO categories -> contiguous ids, the JSON file and its errors."""

from __future__ import annotations

import json

import pytest

from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap, find_label_map

CATEGORIES = [  # unsorted and with gaps, as in real COCO files
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 1, "name": "square"},
    {"id": 3, "name": "circle"},
]


def test_from_coco_categories_sorts_by_coco_id_and_maps_both_ways():
    label_map = LabelMap.from_coco_categories(CATEGORIES)
    assert label_map.names == ("square", "circle", "triangle")
    assert label_map.coco_ids == (1, 3, 7)
    assert label_map.num_classes == 3
    assert [label_map.to_contiguous(c) for c in (1, 3, 7)] == [1, 2, 3]
    assert [label_map.to_coco_id(i) for i in (1, 2, 3)] == [1, 3, 7]
    assert label_map.name(0) == "background"
    assert label_map.name(3) == "triangle"


@pytest.mark.parametrize("bad_id", [-1, 4, 2.0, True])
def test_name_and_to_coco_id_reject_ids_outside_1_to_k(bad_id):
    label_map = LabelMap.from_coco_categories(CATEGORIES)
    with pytest.raises(ValueError, match=r"classes 1\.\.3"):
        label_map.name(bad_id)
    with pytest.raises(ValueError, match=r"classes 1\.\.3"):
        label_map.to_coco_id(bad_id)


def test_to_contiguous_names_the_unknown_coco_id():
    with pytest.raises(ValueError, match="COCO category id 2 is not in the label map"):
        LabelMap.from_coco_categories(CATEGORIES).to_contiguous(2)


@pytest.mark.parametrize(
    "categories, message",
    [
        ([{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}], "COCO id 1 appears more than once"),
        ([{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}], "class name 'cat' appears more than once"),
        ([{"id": 1, "name": "  "}], "empty name"),
        ([{"id": "1", "name": "cat"}], "must be integers"),
        ([{"name": "cat"}], 'needs an "id"'),
        ([], "non-empty list"),
    ],
)
def test_from_coco_categories_errors(categories, message):
    with pytest.raises(ValueError, match=message):
        LabelMap.from_coco_categories(categories)


def test_background_named_class_is_allowed_with_a_warning(caplog):
    label_map = LabelMap.from_coco_categories([{"id": 1, "name": "background"}, {"id": 2, "name": "cat"}])
    assert label_map.names == ("background", "cat")
    assert "distinct from class 0" in caplog.text


def test_save_load_round_trip_and_file_format(tmp_path):
    label_map = LabelMap.from_coco_categories(CATEGORIES)
    path = tmp_path / "out" / LABEL_MAP_FILENAME
    label_map.save(str(path))
    assert LabelMap.load(str(path)) == label_map
    data = json.loads(path.read_text())
    assert data["format"] == "tfmaskrcnn.label_map" and data["version"] == 1
    assert data["classes"][2] == {"id": 3, "name": "triangle", "coco_id": 7}
    assert [p.name for p in path.parent.iterdir()] == [LABEL_MAP_FILENAME]  # no temporary left behind


def _write(tmp_path, classes, **extra):
    path = tmp_path / LABEL_MAP_FILENAME
    path.write_text(json.dumps({"format": "tfmaskrcnn.label_map", "version": 1, "classes": classes, **extra}))
    return str(path)


@pytest.mark.parametrize(
    "classes, message",
    [
        ([{"id": 1, "name": "a"}, {"id": 3, "name": "b"}], r"contiguous 1\.\.2.*missing \[2\]"),
        ([{"id": 2, "name": "a"}], r"contiguous 1\.\.1"),
        ([{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "reserved for background"),
        ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "class id 1 appears twice"),
        ([{"id": 1, "name": "a"}, {"id": 2, "name": "a"}], "class name 'a' appears more than once"),
        ([{"id": 1, "name": "a", "coco_id": 5}, {"id": 2, "name": "b", "coco_id": 5}], "COCO id 5"),
        ([], "non-empty list"),
    ],
)
def test_load_errors_name_the_file(tmp_path, classes, message):
    path = _write(tmp_path, classes)
    with pytest.raises(ValueError, match=message) as error:
        LabelMap.load(path)
    assert path in str(error.value)


def test_load_accepts_classes_in_any_order_and_defaults_coco_id(tmp_path):
    path = _write(tmp_path, [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}])
    assert LabelMap.load(path) == LabelMap(names=("a", "b"), coco_ids=(1, 2))


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"classes": []}')
    with pytest.raises(ValueError, match="not a label map"):
        LabelMap.load(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON at line 1"):
        LabelMap.load(str(path))
    with pytest.raises(FileNotFoundError, match="tfmaskrcnn convert"):
        LabelMap.load(str(tmp_path / "missing.json"))


def test_find_label_map_next_to_tfrecord_patterns(tmp_path):
    LabelMap.from_coco_categories(CATEGORIES).save(str(tmp_path / "train" / LABEL_MAP_FILENAME))
    (tmp_path / "val").mkdir()
    expected = str(tmp_path / "train" / LABEL_MAP_FILENAME)
    assert find_label_map(str(tmp_path / "train" / "*.tfrecord")) == expected
    assert find_label_map(str(tmp_path / "train" / "instances-*")) == expected
    assert find_label_map(str(tmp_path / "train")) == expected
    assert find_label_map(f"{tmp_path / 'val' / '*.tfrecord'},{tmp_path / 'train' / '*.tfrecord'}") == expected
    assert find_label_map(str(tmp_path / "val" / "*.tfrecord")) is None
