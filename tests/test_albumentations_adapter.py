"""The Albumentations adapter: masks, boxes, classes and crowd flags stay together; bad pipelines are refused.

albumentations 2.0.8 is in the `dev` extra, so these run in the main environment (numpy 2).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from test_augment import CLASS_COLOURS, SIGNATURE, assert_instances_aligned, interior, make_example, tight_boxes

from tfmaskrcnn.augment import albumentations_adapter as albu
from tfmaskrcnn.augment import ops as augment
from tfmaskrcnn.augment import presets as augment_presets

A = albu.require_albumentations()


def real_photos(coco_tiny_dir, count: int = 4):
    """(image uint8, boxes, masks [N, H, W] float, classes, extras) of the first COCO photos with a crowd first."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    with open(coco_tiny_dir / "annotations" / "instances_train2017.json") as f:
        coco = json.load(f)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = sorted(coco["images"], key=lambda im: not any(a["iscrowd"] for a in by_image.get(im["id"], [])))
    examples = []
    for info in images[:count]:
        height, width = info["height"], info["width"]
        image = np.asarray(Image.open(coco_tiny_dir / "train2017" / info["file_name"]).convert("RGB"))
        anns = by_image[info["id"]]
        masks = []
        for ann in anns:
            segm = ann["segmentation"]
            if isinstance(segm, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
            elif isinstance(segm["counts"], list):
                rle = mask_utils.frPyObjects(segm, height, width)
            else:
                rle = segm
            masks.append(mask_utils.decode(rle).astype(np.float32))
        x, y, w, h = np.array([a["bbox"] for a in anns], np.float32).T
        boxes = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=1)
        classes = np.array([a["category_id"] for a in anns], np.int64)
        extras = {
            "tag": np.arange(len(anns), dtype=np.int64),
            "is_crowd": np.array([bool(a["iscrowd"]) for a in anns]),
            "area": np.stack(masks).sum(axis=(1, 2)).astype(np.float32),
        }
        examples.append((image, boxes, np.stack(masks), classes, extras))
    assert any(ex[4]["is_crowd"].any() for ex in examples), "the subset should hold a crowd annotation"
    return examples


def run(augmenter, example, seed):
    image, boxes, masks, classes, extras = example
    out = augmenter(image, boxes, masks, classes, extras, seed=tf.constant(seed, tf.int64))
    return tf.nest.map_structure(lambda t: None if t is None else t.numpy(), out)


def colour_class(colour: np.ndarray) -> int:
    """The class whose colour has the same channel pattern: brightness and contrast shift and scale all channels alike."""
    centred = colour - colour.mean()
    scores = {c: float(centred @ (np.array(v) - np.mean(v))) for c, v in CLASS_COLOURS.items()}
    return max(scores, key=scores.get)


@pytest.mark.parametrize("geometry_only", [True, False])
def test_typical_pipeline_keeps_masks_boxes_classes_and_extras_aligned_on_shapes(geometry_only):
    pipeline = albu.typical_pipeline()
    if geometry_only:  # flips, quarter turns, shift-scale-rotate: the class colours stay as they were
        pipeline = A.Compose(pipeline.transforms[:3])
    augmenter = albu.AlbumentationsAugmenter(pipeline)
    fn = tf.function(lambda *a: augmenter(*a[:5], seed=a[5]), input_signature=SIGNATURE)
    rng = np.random.default_rng(0)
    shapes_seen = set()
    for seed in range(40):
        image, boxes, masks, classes, extras = make_example(rng)
        out_image, out_boxes, out_masks, out_classes, out_extras = tf.nest.map_structure(
            lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [seed, 3])
        )
        n = len(out_classes)
        h, w = out_image.shape[:2]
        shapes_seen.add((h, w) == image.shape[:2])
        assert out_image.dtype == np.uint8 and out_masks.shape == (n, h, w) and out_boxes.shape == (n, 4)
        np.testing.assert_array_equal(out_boxes, tight_boxes(out_masks))  # exactly the tight box
        if geometry_only:
            assert_instances_aligned(
                extras, out_image, out_boxes, out_masks, out_classes, out_extras, where=f"seed {seed}"
            )
            continue
        tags = out_extras["tag"]
        assert set(tags) <= set(extras["tag"]) and len(set(tags)) == n
        np.testing.assert_array_equal(tags // 100, out_classes)
        np.testing.assert_array_equal(out_extras["is_crowd"], tags % 2 == 0)
        for mask, cls in zip(out_masks, out_classes):
            inside = interior(mask)
            if inside.sum() >= 3:
                colour = np.median(out_image[inside].astype(float), axis=0)
                assert colour_class(colour) == cls, f"seed {seed}: mask of class {cls} lies on colour {colour}"
    assert shapes_seen == {True, False}  # RandomRotate90 swapped height and width on some


def test_typical_pipeline_on_real_photos_box_is_tight_box_and_class_and_crowd_follow(coco_tiny_dir):
    augmenter = albu.AlbumentationsAugmenter(albu.typical_pipeline())
    kept_crowds = 0
    for index, example in enumerate(real_photos(coco_tiny_dir)):
        image, _, masks, classes, extras = example
        for seed in range(6):
            out_image, out_boxes, out_masks, out_classes, out_extras = run(augmenter, example, [index, seed])
            h, w = out_image.shape[:2]
            assert sorted((h, w)) == sorted(image.shape[:2]) and out_masks.shape[1:] == (h, w)
            np.testing.assert_array_equal(out_boxes, tight_boxes(out_masks))
            assert (out_masks.sum(axis=(1, 2)) >= 4).all() and set(np.unique(out_masks)) <= {0.0, 1.0}
            tags = out_extras["tag"]
            assert len(set(tags)) == len(tags) and (np.diff(tags) > 0).all()
            np.testing.assert_array_equal(out_classes, classes[tags])
            np.testing.assert_array_equal(out_extras["is_crowd"], extras["is_crowd"][tags])
            kept_crowds += int(out_extras["is_crowd"].sum())
            # The area extra follows the mask's pixel count through the warp.
            np.testing.assert_allclose(out_extras["area"], out_masks.sum(axis=(1, 2)), rtol=1e-5)
            # Instances are dropped only when their mask shrank below the minimum or left the image.
            assert len(tags) >= int((masks.sum(axis=(1, 2)) >= 4).sum()) // 2
    assert kept_crowds > 0


def test_flip_only_pipeline_equals_the_in_graph_flip_pixel_for_pixel(coco_tiny_dir):
    augmenter = albu.AlbumentationsAugmenter(A.Compose([A.HorizontalFlip(p=1.0)]))
    for index, example in enumerate(real_photos(coco_tiny_dir, count=3)):
        image, boxes, masks, classes, extras = example
        flipped = augment.flip_left_right({"image": image, "boxes": boxes, "masks": masks})
        out_image, out_boxes, out_masks, out_classes, out_extras = run(augmenter, example, [index, 0])
        kept = np.flatnonzero(masks.sum(axis=(1, 2)) >= 4)
        np.testing.assert_array_equal(out_extras["tag"], kept)
        np.testing.assert_array_equal(out_image, flipped["image"].numpy())
        np.testing.assert_array_equal(out_masks, flipped["masks"].numpy()[kept])
        np.testing.assert_array_equal(out_boxes, tight_boxes(flipped["masks"].numpy()[kept]))
        np.testing.assert_array_equal(out_classes, classes[kept])
        np.testing.assert_array_equal(out_extras["is_crowd"], extras["is_crowd"][kept])


class MasksOnlyShift(A.DualTransform):
    """A user's own transform that moves masks but not boxes (declares no BBoxes target)."""

    _targets = (A.core.type_definitions.Targets.IMAGE, A.core.type_definitions.Targets.MASK)

    def apply(self, img, **params):
        return np.roll(img, 3, axis=1)

    def apply_to_mask(self, mask, **params):
        return np.roll(mask, 3, axis=1)


def test_pipelines_that_would_misalign_are_refused_naming_the_transform_and_the_fix():
    with pytest.raises(ValueError) as err:
        albu.AlbumentationsAugmenter(A.Compose([A.HorizontalFlip(), A.OneOf([MasksOnlyShift(), A.Blur()])]))
    message = str(err.value)
    assert "MasksOnlyShift" in message and "does not support BBoxes" in message and "Fix: remove it" in message
    assert "HorizontalFlip" not in message and "Blur" not in message

    with pytest.raises(ValueError, match=r"OverlayElements .*does not support BBoxes.*MaskDropout needs \['mask'\]"):
        albu.check_pipeline(A.Compose([A.OverlayElements(), A.MaskDropout()]))
    # Pixel-level transforms declare no mask or box targets and never move pixels: accepted.
    albu.check_pipeline(A.Compose([A.RandomBrightnessContrast(), A.Blur(), A.CLAHE(), A.ToGray()]))


def test_config_builds_the_adapter_from_a_yaml_or_json_file_and_refuses_bad_ones(tmp_path):
    yaml_path, json_path = tmp_path / "aug.yaml", tmp_path / "aug.json"
    A.save(albu.typical_pipeline(), str(yaml_path), data_format="yaml")
    A.save(albu.typical_pipeline(), str(json_path), data_format="json")
    for path in (yaml_path, json_path):
        config = augment_presets.AugmentationConfig(albumentations=str(path), seed=3, min_instance_pixels=9)
        augmenter = augment_presets.build_augmenter(config, unit_float_image=True)
        assert isinstance(augmenter, albu.AlbumentationsAugmenter) and augmenter._min_pixels == 9
        assert [type(t).__name__ for t in augmenter._pipeline.transforms] == [
            "HorizontalFlip",
            "RandomRotate90",
            "ShiftScaleRotate",
            "RandomBrightnessContrast",
            "Blur",
        ]

    clash = augment_presets.AugmentationConfig(albumentations=str(yaml_path), preset="standard", rotate_prob=0.2)
    with pytest.raises(ValueError, match=r"preset='standard' and rotate_prob; set preset: none"):
        augment_presets.build_augmenter(clash)
    with pytest.raises(FileNotFoundError, match=r"missing.yaml does not exist; write one with A.save"):
        augment_presets.build_augmenter(
            augment_presets.AugmentationConfig(albumentations=str(tmp_path / "missing.yaml"))
        )
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"transform": {"__class_fullname__": "NoSuchTransform"}}')
    with pytest.raises(ValueError, match=r"garbage.json is not a serialized Albumentations JSON pipeline"):
        augment_presets.build_augmenter(augment_presets.AugmentationConfig(albumentations=str(garbage)))
    refused = tmp_path / "refused.yaml"
    A.save(A.Compose([A.HorizontalFlip(), A.OverlayElements()]), str(refused), data_format="yaml")
    with pytest.raises(ValueError, match=r"refused.yaml is refused: OverlayElements"):
        augment_presets.build_augmenter(augment_presets.AugmentationConfig(albumentations=str(refused)))


def test_same_seed_same_output_threads_boxes_only_and_empty_examples():
    augmenter = albu.AlbumentationsAugmenter(albu.typical_pipeline(), seed_base=0)
    example = make_example(np.random.default_rng(4))
    a, b = run(augmenter, example, [1, 2]), run(augmenter, example, [1, 2])
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_array_equal(x, y)
    differs = [run(augmenter, example, [1, s])[0] for s in range(3, 8)]
    assert any(d.shape != a[0].shape or not np.array_equal(d, a[0]) for d in differs)

    image, boxes, masks, classes, extras = example
    empty = augmenter(image, boxes[:0], masks[:0], classes[:0], {k: v[:0] for k, v in extras.items()})
    assert empty[1].shape == (0, 4) and empty[2].shape[0] == 0 and empty[0].shape[-1] == 3
    assert augmenter(image, boxes[:0], None, classes[:0])[1].shape == (0, 4)

    flip = albu.AlbumentationsAugmenter(A.HorizontalFlip(p=1.0))
    out = flip(image, boxes, None, classes, extras)
    assert out[2] is None
    flipped = boxes[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1]
    np.testing.assert_allclose(out[1].numpy(), flipped, atol=1e-6)

    # One augmenter shared by parallel map calls: each thread has its own pipeline copy.
    examples = [make_example(np.random.default_rng(s)) for s in range(16)]
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=tuple(SIGNATURE[:5]))
    ds = ds.map(lambda i, b, m, c, e: augmenter(i, b, m, c, e), num_parallel_calls=4)
    for out_image, out_boxes, out_masks, out_classes, out_extras in ds.as_numpy_iterator():
        assert len(out_boxes) == len(out_masks) == len(out_classes) == len(out_extras["tag"])
        np.testing.assert_array_equal(out_boxes, tight_boxes(out_masks))
        np.testing.assert_array_equal(out_extras["tag"] // 100, out_classes)


def test_missing_albumentations_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "albumentations", None)  # what `import` sees when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'tfmaskrcnn\[albumentations\]'"):
        albu.require_albumentations()


def test_show_augment_draws_a_saved_pipeline(shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli

    pipeline = tmp_path / "aug.yaml"
    A.save(albu.typical_pipeline(), str(pipeline), data_format="yaml")
    output = tmp_path / "grid.png"
    argv = ["show-augment", shapes_records["train"], "--output", str(output), "--num-images", "2", "--samples", "2"]
    assert cli.main(argv + ["--albumentations", str(pipeline)]) == 0
    assert output.stat().st_size > 1000
    assert f"Albumentations pipeline {pipeline}" in capsys.readouterr().out
    assert cli.main(argv + ["--albumentations", str(pipeline), "--preset", "heavy"]) == 2
    assert "drop --preset and --set" in capsys.readouterr().err


@pytest.mark.slow
def test_two_training_steps_with_the_pipeline_from_a_yaml_file(shapes_records, tiny_experiment, tmp_path):
    from tfmaskrcnn.cli import train
    from tfmaskrcnn.tasks import config_resolution
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    pipeline = tmp_path / "aug.yaml"
    A.save(albu.typical_pipeline(), str(pipeline), data_format="yaml")
    params = tiny_experiment(shapes_records, train_steps=2)
    params.override({"task": {"train_data": {"parser": {"augmentation": {"albumentations": str(pipeline)}}}}})
    config_resolution.resolve_config(params.task)
    parser = TfMaskRCNNTask(params.task)._build_parser(params.task.train_data)  # pylint: disable=protected-access
    assert isinstance(parser._example_augmenter, albu.AlbumentationsAugmenter)  # pylint: disable=protected-access

    model_dir = str(tmp_path / "run")
    train.run(params, model_dir, "train")
    assert any(name.startswith("ckpt-2") for name in os.listdir(model_dir))
    import yaml

    recorded = yaml.safe_load(open(os.path.join(model_dir, "params.yaml")))["task"]["train_data"]["parser"]
    assert recorded["augmentation"]["albumentations"] == str(pipeline)


def test_input_pipeline_benchmark_times_the_albumentations_rows(shapes_records, tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "input_pipeline.py"
    spec = importlib.util.spec_from_file_location("input_pipeline_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = tmp_path / "bench.json"
    argv = [
        "--data",
        shapes_records["train"],
        "--output-size",
        "64",
        "--warmup",
        "1",
        "--batches",
        "2",
        "--rounds",
        "1",
    ]
    assert bench.main(argv + ["--variants", "none,albumentations", "--json-output", str(report)]) == 0
    rates = json.loads(report.read_text())["images_per_second"]
    assert set(rates) == {"none", "albumentations"} and all(r > 0 for r in rates.values())
