"""The synthetic shapes dataset: COCO validity, masks, class mix, determinism, CLI."""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tfmaskrcnn import cli
from tfmaskrcnn.data.shapes import generator as shapes
from tfmaskrcnn.data.shapes.draw import MIN_VISIBLE_FRACTION, MIN_VISIBLE_PIXELS, render_scene
from tfmaskrcnn.data.shapes.generator import (
    SHAPE_NAMES,
    encode_instance,
    exact_class_counts,
    generate_shapes_dataset,
    normalize_class_ratios,
)

IMBALANCED = (0.9, 0.07, 0.03)


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """The documented imbalance demo: 400 train images at 0.9/0.07/0.03, 100 balanced val."""
    out = tmp_path_factory.mktemp("shapes_imbalanced")
    summary = generate_shapes_dataset(out, num_train=400, num_val=100, class_ratios=IMBALANCED, seed=0, progress=False)
    return out, summary


def _load(out: pathlib.Path, split: str) -> COCO:
    return COCO(str(out / "annotations" / f"instances_{split}.json"))


def _shares(coco: COCO, num_classes: int) -> np.ndarray:
    counts = np.bincount([a["category_id"] for a in coco.dataset["annotations"]], minlength=num_classes + 1)
    assert counts[0] == 0, "category id 0 is background and must never be used"
    return counts[1:] / counts.sum()


def test_train_shares_follow_ratios_and_val_is_balanced(imbalanced):
    out, summary = imbalanced
    train, val = _load(out, "train"), _load(out, "val")
    assert len(train.dataset["annotations"]) > 800  # 1..4 objects per image, 400 images
    np.testing.assert_allclose(_shares(train, 3), IMBALANCED, atol=0.01)
    np.testing.assert_allclose(_shares(val, 3), [1 / 3] * 3, atol=0.01)
    counted = np.bincount([a["category_id"] - 1 for a in train.dataset["annotations"]], minlength=3)
    assert list(summary["splits"]["train"]["instances_per_class"].values()) == counted.tolist()


def test_files_are_valid_coco(imbalanced):
    out, summary = imbalanced
    for split, num_images in (("train", 400), ("val", 100)):
        coco = _load(out, split)
        data = coco.dataset
        assert data["categories"] == [
            {"id": 1, "name": "square", "supercategory": "shape"},
            {"id": 2, "name": "circle", "supercategory": "shape"},
            {"id": 3, "name": "triangle", "supercategory": "shape"},
        ]
        assert len(data["images"]) == num_images
        assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
        assert len({img["id"] for img in data["images"]}) == num_images
        for img in data["images"][:20]:
            path = out / split / img["file_name"]
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB"
                assert im.size == (img["width"], img["height"]) == (128, 128)
        assert summary["splits"][split]["annotation_file"] == str(out / "annotations" / f"instances_{split}.json")
        assert not list((out / "annotations").glob("*.tmp")), "temporary files must be renamed away"


def test_every_mask_matches_its_bbox_and_area(imbalanced):
    out, _ = imbalanced
    kinds = {"polygon": 0, "rle": 0}
    for split in ("train", "val"):
        coco = _load(out, split)
        for ann in coco.dataset["annotations"]:
            kinds["rle" if isinstance(ann["segmentation"], dict) else "polygon"] += 1
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == [int(v) for v in tight], ann["id"]
            assert ann["area"] == int(mask.sum()) >= MIN_VISIBLE_PIXELS, ann["id"]
            assert ann["iscrowd"] == 0
    # Both encodings occur in quantity, so converters are exercised on both.
    assert kinds["polygon"] > 200 and kinds["rle"] > 100, kinds


def test_polygons_and_rles_decode_to_the_painted_pixels():
    rng = np.random.default_rng(123)
    size = 96
    ys, xs = np.mgrid[0:size, 0:size]
    pixel_centres = np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5  # COCO: pixel i spans [i, i+1)
    seen = {"polygon": 0, "rle": 0}
    centred_ious = []
    for _ in range(30):
        image, instances, _ = render_scene(rng, rng.integers(0, len(SHAPE_NAMES), size=4).tolist(), size)
        covered = np.zeros((size, size), dtype=int)
        for inst in instances:
            ann = encode_instance(inst)
            seg = ann["segmentation"]
            if isinstance(seg, dict):
                seen["rle"] += 1
                decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
                np.testing.assert_array_equal(decoded.astype(bool), inst.visible_mask)
            else:
                seen["polygon"] += 1
                decoded = mask_utils.decode(mask_utils.frPyObjects(seg, size, size))[:, :, 0].astype(bool)
                iou = (decoded & inst.visible_mask).sum() / (decoded | inst.visible_mask).sum()
                assert iou > 0.9, iou
                # An independent rasteriser (point in polygon at pixel centres) agrees up to
                # boundary pixels: the written coordinates are the painted shape's outline.
                outline = Path(np.reshape(seg[0], (-1, 2)))
                centred = outline.contains_points(pixel_centres).reshape(size, size)
                centred_ious.append((centred & decoded).sum() / (centred | decoded).sum())
            # The image holds the instance colour exactly on its visible pixels.
            assert (image[inst.visible_mask] == inst.colour).all()
            visible = inst.visible_mask.sum()
            assert visible >= MIN_VISIBLE_PIXELS and visible >= MIN_VISIBLE_FRACTION * inst.full_mask.sum()
            covered += inst.visible_mask
        assert covered.max() <= 1, "visible masks of one image must not overlap"
    assert seen["polygon"] > 0 and seen["rle"] > 0
    # Thin star tips on the smallest shapes cost a few pixels; on average the two agree closely.
    assert min(centred_ious) > 0.8 and np.mean(centred_ious) > 0.95


def test_same_seed_gives_identical_files_and_splits_differ(tmp_path):
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    kwargs = dict(num_train=6, num_val=4, class_ratios=IMBALANCED, image_size=64, progress=False)
    generate_shapes_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_shapes_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_shapes_dataset(tmp_path / "c", seed=8, **kwargs)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 2 + 6 + 4
    assert a == b
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]
    assert a["train/000001.png"] != c["train/000001.png"]
    assert a["train/000001.png"] != a["val/000001.png"]


def test_number_of_classes_follows_the_ratios(tmp_path):
    summary = generate_shapes_dataset(
        tmp_path / "six",
        num_train=40,
        num_val=20,
        class_ratios=[1] * 6,
        val_class_ratios=[6, 5, 4, 3, 2, 1],
        image_size=64,
        progress=False,
    )
    assert summary["categories"] == list(SHAPE_NAMES[:6])
    data = json.loads((tmp_path / "six" / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(SHAPE_NAMES[:6])
    counts = list(summary["splits"]["val"]["instances_per_class"].values())
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]

    summary = generate_shapes_dataset(
        tmp_path / "one", num_train=5, num_val=5, class_ratios=[2.0], image_size=64, progress=False
    )
    assert summary["categories"] == ["square"]


def test_crowded_images_leave_out_shapes_and_say_so(tmp_path):
    # 32 px images cannot hold up to 30 shapes that each stay 30% visible.
    summary = generate_shapes_dataset(tmp_path, num_train=6, num_val=1, image_size=32, max_objects=30, progress=False)
    train = summary["splits"]["train"]
    assert train["unplaced_instances"] > 0
    data = json.loads(pathlib.Path(train["annotation_file"]).read_text())
    assert len(data["annotations"]) == train["num_instances"] == sum(train["instances_per_class"].values())
    assert "found no room and were left out" in shapes.format_summary(summary)


def test_exact_class_counts():
    assert exact_class_counts([0.9, 0.07, 0.03], 1000).tolist() == [900, 70, 30]
    assert exact_class_counts([1 / 3] * 3, 10).tolist() == [4, 3, 3]
    counts = exact_class_counts([0.5, 0.3, 0.2], 7)
    assert counts.sum() == 7 and counts.tolist() == [4, 2, 1]


@pytest.mark.parametrize(
    "ratios, message",
    [
        ([0.9, 0.0, 0.1], "positive"),
        ([1, -1], "positive"),
        ([1, float("nan")], "positive"),
        (["a", 1], "not a number"),
        ([], "empty"),
        ([1] * (len(SHAPE_NAMES) + 1), f"at most {len(SHAPE_NAMES)}"),
    ],
)
def test_invalid_ratios_are_refused_with_the_fix(ratios, message):
    with pytest.raises(ValueError, match=message):
        normalize_class_ratios(ratios)


def test_invalid_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="val_class_ratios has 2 entries but class_ratios has 3"):
        generate_shapes_dataset(tmp_path, class_ratios=[1, 1, 1], val_class_ratios=[1, 1])
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes_dataset(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="max_objects"):
        generate_shapes_dataset(tmp_path, max_objects=0)
    assert not (tmp_path / "annotations").exists(), "nothing is written when arguments are bad"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfmaskrcnn shapes")
    shapes.add_arguments(parser)
    return parser


def test_cli_writes_the_dataset_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "ds"
    args = _parser().parse_args(
        [
            "--output",
            str(out),
            "--num-train",
            "12",
            "--num-val",
            "6",
            "--class-ratios",
            "9,0.7,0.3",
            "--image-size",
            "64",
            "--seed",
            "3",
            "--max-objects",
            "2",
        ]
    )
    assert args.class_ratios == (9.0, 0.7, 0.3)
    assert shapes.main(args) == 0
    printed = capsys.readouterr().out
    assert "square" in printed and "train" in printed and "val" in printed
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(data["images"]) == 12 and len((list((out / "val").glob("*.png")))) == 6
    per_image = np.bincount([a["image_id"] for a in data["annotations"]])
    assert per_image.max() <= 2

    # Through the top-level command as well.
    assert (
        cli.main(
            [
                "shapes",
                "--output",
                str(tmp_path / "via_cli"),
                "--num-train",
                "2",
                "--num-val",
                "2",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    assert (tmp_path / "via_cli" / "annotations" / "instances_val.json").exists()


def test_cli_rejects_bad_ratios(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--output", str(tmp_path), "--class-ratios", "0.9,0,0.1"])
    assert exit_info.value.code == 2
    assert "ratio[1] = 0.0" in capsys.readouterr().err
    args = _parser().parse_args(["--output", str(tmp_path), "--class-ratios", "1,1,1", "--val-class-ratios", "1,1"])
    assert shapes.main(args) == 2
    assert "same classes" in capsys.readouterr().err


def test_importing_the_generator_does_not_import_tensorflow():
    code = "import sys, tfmaskrcnn.data.shapes.generator; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    assert result.stdout.strip() == "False"
