"""`--format` of `tfmaskrcnn convert` and `tfmaskrcnn audit`: detection, what is said, --strict, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from format_exports import labelme_shape, make_dataset, write_all, write_labelme_file

from tfmaskrcnn.cli import main as cli_main
from tfmaskrcnn.data.formats import ExportFormatError
from tfmaskrcnn.data.formats.command import default_prefix
from tfmaskrcnn.data.formats.detect import detect_format


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("exports"), make_dataset(num_images=4, num_negative=1))


def test_each_export_is_detected_from_its_folder(exports, tmp_path):
    import os

    for name in ("labelme", "cvat", "yolo", "voc"):
        path = exports[name]["annotations"]
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        assert detect_format(folder).format == name
    # A Roboflow COCO folder: one JSON with the images beside it.
    roboflow = tmp_path / "train"
    shutil.copytree(exports["coco"]["images"], roboflow)
    shutil.copy(exports["coco"]["annotations"], roboflow / "_annotations.coco.json")
    detection = detect_format(str(roboflow))
    assert (detection.format, detection.images_dir) == ("coco", str(roboflow))
    # Labelme JSON files beside a CVAT annotations.xml: ambiguous, --format decides.
    shutil.copy(exports["cvat"]["annotations"], tmp_path / "annotations.xml")
    write_labelme_file(tmp_path, "a", [labelme_shape("cat", [(1, 1), (9, 1), (9, 9)])])
    with pytest.raises(ExportFormatError, match="several formats .*cvat.*labelme.*--format"):
        detect_format(str(tmp_path))
    (tmp_path / "voc.xml").write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(ExportFormatError, match="boxes, no masks"):
        detect_format(str(tmp_path / "voc.xml"))


def test_convert_says_what_it_detected_and_converts_a_roboflow_folder(exports, tmp_path, capsys):
    roboflow = tmp_path / "train"
    shutil.copytree(exports["coco"]["images"], roboflow)
    shutil.copy(exports["coco"]["annotations"], roboflow / "_annotations.coco.json")
    assert (
        cli_main(["convert", "--annotations", str(roboflow), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    )
    assert "format: coco (detected: _annotations.coco.json (COCO instances)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "conversion_report.json").read_text())["totals"]["images_out"] == 4

    output = tmp_path / "voc_out"
    argv = ["convert", "--annotations", exports["voc"]["annotations"], "--split", "train", "--output", str(output)]
    assert cli_main(argv + ["--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "format: voc (detected: a SegmentationObject folder (Pascal VOC)" in out
    assert "4 images (1 without annotations, kept as negatives), 10 annotations, 3 classes: cat, dog, bird" in out
    assert sorted(p.name for p in output.glob("*.tfrecord")) == ["train-00000-of-00001.tfrecord"]


def test_strict_refuses_an_import_that_skipped_records(exports, tmp_path, capsys):
    folder = tmp_path / "labelme"
    shutil.copytree(exports["labelme"]["annotations"], folder)
    write_labelme_file(folder, "img_00", [labelme_shape("cat", [(0, 0), (20, 20)], shape_type="rectangle")])
    output = tmp_path / "out"
    argv = ["convert", "--format", "labelme", "--annotations", str(folder), "--output", str(output), "--strict"]
    assert cli_main(argv + ["--no-progress"]) == 1
    assert "--strict: the import skipped 2 record(s); nothing converted" in capsys.readouterr().err
    assert not list(output.glob("*.tfrecord"))
    report = json.loads((output / "import_report.json").read_text())
    assert report["skipped"] == {"labelme_image_only_unusable_shapes": 1, "labelme_rectangle_ignored": 1}
    assert "img_00.json shapes[0]" in report["examples"]["labelme_rectangle_ignored"][0]


def test_usage_errors_exit_2_with_the_fix(exports, tmp_path, capsys):
    coco_json = exports["coco"]["annotations"]
    assert cli_main(["convert", "--annotations", coco_json, "--output", str(tmp_path / "a")]) == 2
    assert "--images is required with a COCO JSON" in capsys.readouterr().err
    yolo_yaml = exports["yolo"]["annotations"]
    assert cli_main(["convert", "--annotations", yolo_yaml, "--output", str(tmp_path / "b")]) == 2
    assert "pick one with --split" in capsys.readouterr().err
    argv = ["convert", "--annotations", coco_json, "--images", exports["coco"]["images"], "--split", "train"]
    assert cli_main(argv + ["--output", str(tmp_path / "c")]) == 2
    assert "--split and --names are for Labelme, CVAT, YOLO and VOC exports" in capsys.readouterr().err


def test_audit_reads_an_export(exports, tmp_path, capsys):
    output = tmp_path / "audit"
    argv = ["audit", "--annotations", exports["yolo"]["annotations"], "--split", "train", "--output", str(output)]
    assert cli_main(argv + ["--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "format: yolo (detected" in out and "imported yolo export" in out
    audit = json.loads((output / "audit.json").read_text())
    assert audit["source"]["format"] == "yolo"
    assert json.loads((output / "import_report.json").read_text())["totals"]["negative_images"] == 1
    argv = ["audit", "--annotations", exports["cvat"]["annotations"], "--val-annotations", "v.json"]
    assert cli_main(argv + ["--output", str(output)]) == 2
    assert "audit each split of a cvat export on its own" in capsys.readouterr().err


def test_default_prefix_is_a_valid_shard_prefix():
    assert default_prefix("train") == "train"
    assert default_prefix("/x/my export (v2)/annotations.xml") == "annotations"
    assert default_prefix("/x/labelme data") == "labelme_data"
