"""The audit sees what the converter will write: real exports' category ids, class maps, crowd, --fail-on.

The car-damage subset (tests/data/car_damage_mini, Roboflow's COCO export as downloaded, CC BY 4.0)
is converted and audited through the commands; the traps of other tools are small COCO dicts
(the clean 6-image dataset of test_audit with one change).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from test_audit import SIZE, clean_coco, write_images

from tfmaskrcnn import cli
from tfmaskrcnn.data import audit
from tfmaskrcnn.data.audit import ERROR, INFO, WARNING
from tfmaskrcnn.data.categories import CategoryOptions
from tfmaskrcnn.data.label_map import LabelMap

CAR_DAMAGE = pathlib.Path(__file__).parent / "data" / "car_damage_mini"
CAR_CLASSES = ["airbag", "astar", "cam_catlagi", "cizik", "far_hasar", "gocuk", "kaput_hasar", "kirik-kayip"]


def run(tmp_path, data, **kwargs) -> audit.AuditResult:
    write_images(tmp_path / "images", clean_coco())
    return audit.audit_coco_dict(data, str(tmp_path / "images"), progress=False, workers=2, **kwargs)


def errors(result) -> list[str]:
    return [f.check for f in result.findings if f.severity == ERROR]


def test_car_damage_convert_and_audit_end_to_end(tmp_path, capsys):
    """Roboflow's export as downloaded: convert, audit the export and the records; same 8 classes and counts."""
    annotations = CAR_DAMAGE / "train" / "_annotations.coco.json"
    records = tmp_path / "records"
    # The Roboflow split folder as downloaded (its _annotations.coco.json and photos are found in it).
    argv = ["convert", "--annotations", str(CAR_DAMAGE / "train"), "--output", str(records), "--no-progress"]
    assert cli.main(argv) == 0
    stats = json.loads((records / "dataset_stats.json").read_text())
    assert list(LabelMap.load(str(records / "label_map.json")).names) == CAR_CLASSES

    out = tmp_path / "audit"
    argv = ["audit", "--annotations", str(annotations), "--images", str(CAR_DAMAGE / "train"), "--output", str(out)]
    code = cli.main(argv + ["--no-progress"])
    report = json.loads((out / "audit.json").read_text())
    findings = {f["check"]: f for f in report["findings"]}
    assert code == 0 and report["counts"][ERROR] == 0, capsys.readouterr().out
    # The unused parent category id 0 'car' is left out, as by the converter; not an error any more.
    assert findings["categories_left_out"]["severity"] == INFO and "'car'" in findings["categories_left_out"]["message"]
    assert "category_id_gaps" not in findings  # classes 1..8 once 'car' is left out
    assert [c["name"] for c in report["classes"]] == CAR_CLASSES
    by_name = {c["name"]: c["instances"] for c in stats["classes"]}
    assert {c["name"]: c["instances"] for c in report["classes"]} == by_name
    assert report["totals"]["annotations"] == report["totals"]["usable_annotations"] == 123
    assert all(c["crowd"] == 0 for c in report["classes"])

    code = cli.main(["audit", str(records), "--output", str(tmp_path / "audit_records"), "--no-progress"])
    from_records = json.loads((tmp_path / "audit_records" / "audit.json").read_text())
    assert code == 0 and {c["name"]: c["instances"] for c in from_records["classes"]} == by_name


def test_zero_indexed_ids_are_fine_and_reported_as_renumbered(tmp_path):
    data = clean_coco()
    for category in data["categories"]:
        category["id"] -= 1
    for annotation in data["annotations"]:
        annotation["category_id"] -= 1
    result = run(tmp_path, data)
    assert errors(result) == [] and result.instances.tolist() == [4, 4, 4]
    gaps = result.finding("category_id_gaps")
    assert gaps.severity == INFO and "ids 0..2" in gaps.message and "1..3" in gaps.message


def test_an_annotated_category_zero_is_a_class(tmp_path):
    data = clean_coco()
    data["categories"][0]["id"] = 0  # 'a' is id 0 and has 4 annotations
    for annotation in data["annotations"]:
        if annotation["category_id"] == 1:
            annotation["category_id"] = 0
    result = run(tmp_path, data)
    assert errors(result) == [] and result.names == ["a", "b", "c"] and result.instances.tolist() == [4, 4, 4]


def test_class_map_and_drop_as_in_convert(tmp_path):
    merged = run(tmp_path, clean_coco(), categories=CategoryOptions(class_map={"b": "a"}))
    assert merged.names == ["a", "c"] and merged.instances.tolist() == [8, 4]
    dropped = run(tmp_path, clean_coco(), categories=CategoryOptions(drop=("c",)))
    assert dropped.names == ["a", "b"] and dropped.finding("category_dropped").count == 4
    assert dropped.finding("category_dropped").severity == INFO and errors(dropped) == []
    wrong = run(tmp_path, clean_coco(), categories=CategoryOptions(class_map={"cat": "a"}))
    finding = wrong.finding("category_options")
    assert finding.severity == ERROR and "'cat'" in finding.message and wrong.exit_code == 1


def brush_dataset() -> dict:
    """The clean dataset plus a class 'blob' drawn with CVAT's brush: 3 RLE masks, all iscrowd=1."""
    data = clean_coco()
    data["categories"].append({"id": 4, "name": "blob"})
    for k, image_id in enumerate((1, 2, 3)):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
        mask[40:60, 2:30] = 1
        rle = mask_utils.encode(mask)
        data["annotations"].append(
            {
                "id": 900 + k,
                "image_id": image_id,
                "category_id": 4,
                "bbox": [2, 40, 28, 20],
                "area": 560.0,
                "segmentation": {"size": [SIZE, SIZE], "counts": rle["counts"].decode()},
                "iscrowd": 1,
            }
        )
    return data


@pytest.mark.parametrize("crowd", ["keep", "skip"])
def test_a_class_drawn_only_as_crowd_is_an_error_naming_the_cure(tmp_path, crowd):
    result = run(tmp_path, brush_dataset(), crowd=crowd)
    finding = result.finding("class_only_crowd")
    assert finding is not None and finding.severity == ERROR, result.format_summary()
    assert "3 'blob' annotation(s), all iscrowd=1" in finding.message and "--crowd as-instances" in finding.fix
    assert "classes_without_instances" not in {f.check for f in result.findings}  # one finding, the right one
    blob = result.histogram()[3]
    assert (blob["name"], blob["instances"], blob["crowd"]) == ("blob", 0, 3)
    if crowd == "skip":
        assert "left out by --crowd skip" in finding.message and result.finding("crowd_skipped").count == 3
    else:
        assert "'blob' 3" in result.finding("crowd_annotations").message  # per-class crowd counts


def test_crowd_as_instances_trains_the_brush_class(tmp_path):
    result = run(tmp_path, brush_dataset(), crowd="as-instances")
    assert result.finding("class_only_crowd") is None and result.instances.tolist() == [4, 4, 4, 3]
    assert result.finding("crowd_as_instance").count == 3 and result.num_crowd == 0


def write_export(folder: pathlib.Path, data: dict) -> pathlib.Path:
    write_images(folder / "images", clean_coco())
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def audit_cli(path: pathlib.Path, out: pathlib.Path, *flags: str) -> int:
    argv = ["audit", "--annotations", str(path), "--images", str(path.parent / "images"), "--output", str(out)]
    return cli.main(argv + ["--no-progress", *flags])


def test_fail_on_warning_gates_on_data_that_training_survives(tmp_path, capsys):
    data = clean_coco()
    data["images"][0]["file_name"] = "nowhere.png"  # missing image
    data["images"][1]["file_name"] = "../img2.png"  # escapes the image folder
    data["annotations"].append(dict(data["annotations"][5], id=97, image_id=777))  # annotation of no image
    path = write_export(tmp_path / "warn", data)
    assert audit_cli(path, tmp_path / "a") == 0  # default --fail-on error: training survives these
    report = json.loads((tmp_path / "a" / "audit.json").read_text())
    warned = {f["check"] for f in report["findings"] if f["severity"] == WARNING}
    assert {"image_missing", "file_name_escapes_image_dir", "annotation_unknown_image"} <= warned
    assert report["counts"][ERROR] == 0
    capsys.readouterr()
    assert audit_cli(path, tmp_path / "b", "--fail-on", "warning") == 1
    assert "--fail-on warning:" in capsys.readouterr().out
    clean = write_export(tmp_path / "clean", clean_coco())
    assert audit_cli(clean, tmp_path / "c", "--fail-on", "warning") == 0
    assert audit_cli(clean, tmp_path / "d", "--fail-on", "error") == 0


def test_class_flags_through_the_command(tmp_path, capsys):
    path = write_export(tmp_path / "brush", brush_dataset())
    assert audit_cli(path, tmp_path / "keep") == 1
    assert "class_only_crowd" in capsys.readouterr().out
    html = (tmp_path / "keep" / "report.html").read_text()
    assert "crowd (not trained on)" in html and "<td>blob</td><td>0</td><td>3</td>" in html
    class_map = tmp_path / "classes.yaml"
    class_map.write_text("b: a\n")
    assert audit_cli(path, tmp_path / "fixed", "--crowd", "as-instances", "--class-map", str(class_map)) == 0
    report = json.loads((tmp_path / "fixed" / "audit.json").read_text())
    assert [(c["name"], c["instances"]) for c in report["classes"]] == [("a", 8), ("c", 4), ("blob", 3)]
    # Converted records already hold their classes: the class flags are refused there.
    assert cli.main(["audit", str(tmp_path), "--output", str(tmp_path / "r"), "--crowd", "skip"]) == 2
    assert "apply to an export" in capsys.readouterr().err


def test_duplicate_image_ids_are_reported_with_both_files(tmp_path):
    data = clean_coco()
    data["images"].append(dict(data["images"][0], file_name="img2.png"))
    finding = run(tmp_path, data).finding("duplicate_image_id")
    assert finding.severity == ERROR and "img2.png" in finding.message and "'img1.png'" in finding.message
