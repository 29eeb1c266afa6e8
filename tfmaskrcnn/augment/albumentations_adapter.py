"""Run an Albumentations pipeline in the Mask R-CNN input pipeline, masks and boxes kept aligned.

For teams that already have an Albumentations pipeline (the kind MMDetection's `Albu` and
Ultralytics apply). `AlbumentationsAugmenter(pipeline)` has the signature of the in-graph
augmenter, so `AugmentingParser(..., augmenter=...)` takes it; in an experiment config,
`task.train_data.parser.augmentation.albumentations` names a pipeline saved with
`A.save(pipeline, "aug.yaml", data_format="yaml")` (the `A.to_dict` layout) and training
builds it with `build_augmenter` (`tfmaskrcnn.augment.presets`).

The instance masks go to Albumentations as `masks=` (one mask per instance, so overlaps
survive; Albumentations warps masks with nearest-neighbour unless a transform is told
otherwise), the boxes as `bboxes=` with each instance's index as a label, so box-aware
crops (`BBoxSafeRandomCrop`, `AtLeastOneBBoxRandomCrop`) see them. Boxes, dropping,
seeding and threads are `python_augmenter.PythonAugmenter`'s: boxes are the tight boxes
of the augmented masks (of Albumentations' clipped boxes when there are no masks).
The adapter wraps the pipeline's transforms in its own `A.Compose` with its own
`bbox_params`, so a pipeline's `bbox_params` / `keypoint_params` are not used.

A transform that moves pixels but does not list masks and boxes among its targets would
move the image and leave the masks where they were, silently; such pipelines are refused
when the augmenter is built (`check_pipeline`). Pixel-level transforms
(`ImageOnlyTransform`: colour, blur, noise) never move pixels and are always accepted.

albumentations 2.0.8 is the last release of the MIT-licensed line (its successor,
AlbumentationsX, is AGPL-3.0); it is the optional extra `[albumentations]` and imported
only here.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from tfmaskrcnn.augment.python_augmenter import PythonAugmenter, tight_boxes

INSTALL_HINT = "pip install 'tfmaskrcnn[albumentations]' (albumentations==2.0.8)"
_IDS = "instance_ids"  # the label field that ties Albumentations' boxes to our instances
_PASSED = {"image", "masks", "bboxes", _IDS}  # what the adapter hands to every call
_FIX = (
    "remove it from the pipeline or replace it with a transform whose targets include Mask and BBoxes "
    "(Albumentations' 'supported targets by transform' table); pixel-level transforms are always fine"
)


def require_albumentations():
    """Imports albumentations or raises an ImportError that says how to install it."""
    # Albumentations asks PyPI for a newer version at import, from every input worker.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations as A
    except ImportError as err:
        raise ImportError(
            f"the Albumentations adapter cannot import albumentations ({err}); install it with: {INSTALL_HINT}"
        ) from err
    return A


def _leaves(transform):
    """The transforms of a pipeline, nested OneOf / SomeOf / Sequential / Compose opened."""
    A = require_albumentations()
    if isinstance(transform, A.BaseCompose):
        for child in transform.transforms:
            yield from _leaves(child)
    else:
        yield transform


def _targets(transform) -> set:
    declared = getattr(type(transform), "_targets", ())
    return {t.value for t in (declared if isinstance(declared, tuple) else (declared,)) if t is not None}


def check_pipeline(pipeline, source: str = "the Albumentations pipeline") -> None:
    """Raises ValueError naming every transform that would misalign masks or boxes, and the fix."""
    A = require_albumentations()
    if not isinstance(pipeline, A.BasicTransform) and not isinstance(pipeline, A.BaseCompose):
        raise TypeError(f"{source}: expected an Albumentations transform or Compose, got {type(pipeline).__name__}")
    problems = []
    for transform in _leaves(pipeline):
        name = type(transform).__name__
        if not isinstance(transform, A.ImageOnlyTransform):
            missing = [t for t in ("Mask", "BBoxes") if t not in _targets(transform)]
            if missing:
                declared = ", ".join(sorted(_targets(transform))) or "none"
                problems.append(
                    f"{name} is not a pixel-level transform but does not support {' or '.join(missing)} (its targets: {declared}), "
                    f"so the instance {'masks' if 'Mask' in missing else 'boxes'} would not follow the image"
                )
                continue
        needs = set(transform.targets_as_params) - _PASSED
        if needs:
            problems.append(f"{name} needs {sorted(needs)} with every image, which the Mask R-CNN input does not have")
    if problems:
        raise ValueError(f"{source} is refused: " + "; ".join(problems) + f". Fix: {_FIX}.")


def load_pipeline(path: str):
    """Reads a pipeline saved with `A.save` / `A.to_dict` (.yaml/.yml as YAML, anything else as JSON)."""
    A = require_albumentations()
    data_format = "yaml" if str(path).lower().endswith((".yaml", ".yml")) else "json"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Albumentations pipeline {path} does not exist; write one with "
            f"A.save(pipeline, {str(path)!r}, data_format={data_format!r})"
        )
    try:
        return A.load(path, data_format=data_format)
    except Exception as err:  # json/yaml syntax, unknown transform names, bad arguments: all one fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{path} is not a serialized Albumentations {data_format.upper()} pipeline "
            f"({type(err).__name__}: {first}); write it with A.save(pipeline, {str(path)!r}, "
            f"data_format={data_format!r}) from albumentations 2.0.x"
        ) from None


def typical_pipeline():
    """The pipeline most often pasted: flips, quarter turns, shift-scale-rotate, colour, blur."""
    A = require_albumentations()
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.2, rotate_limit=30, border_mode=0, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.Blur(blur_limit=3, p=0.1),
        ]
    )


def standard_pipeline():
    """An Albumentations pipeline close to the in-graph `standard` preset (for comparisons).

    The same as `imgaug_adapter.standard_pipeline`: no flip or scale of its own (Model
    Garden's parser does those), one affine warp on 52% of the images, then colour, blur
    and noise with `standard`'s probabilities.
    """
    A = require_albumentations()
    return A.Compose(
        [
            A.Affine(rotate=(-10, 10), shear=(-5, 5), translate_percent=(-0.1, 0.1), interpolation=1, fill=115, p=0.52),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=0.75),
            A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=0, p=0.6),
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 1.0), p=0.1),
            A.GaussNoise(std_range=(0.0, 0.02), p=0.1),
        ]
    )


def _wrap(pipeline):
    """The pipeline's transforms in a Compose that carries our boxes and their instance indices."""
    A = require_albumentations()
    if isinstance(pipeline, A.Compose):
        transforms, p = list(pipeline.transforms), pipeline.p
    else:
        transforms, p = [pipeline], 1.0
    bbox_params = A.BboxParams(
        format="albumentations",  # normalized x_min, y_min, x_max, y_max
        label_fields=[_IDS],
        clip=True,
        filter_invalid_bboxes=True,  # a degenerate input box drops that box only, never the mask
        min_area=0.0,
        min_visibility=0.0,
    )
    return A.Compose(transforms, bbox_params=bbox_params, p=p)


def _to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(boxes, np.float64)[:, [1, 0, 3, 2]], 0.0, 1.0)


class AlbumentationsAugmenter(PythonAugmenter):
    """`augmenter(image, boxes, masks, classes, extras=None, seed=None)` running an Albumentations pipeline.

    `pipeline`: an `A.Compose` (or one transform), or the path of one saved with `A.save`.
    Refused with a ValueError if a transform would misalign masks or boxes (see
    `check_pipeline`). Seeding and threads as `python_augmenter.PythonAugmenter`.
    """

    def __init__(
        self, pipeline, min_instance_pixels: int = 4, min_box_side: float = 1.0, seed_base: Optional[int] = None
    ):
        require_albumentations()
        source = "the Albumentations pipeline"
        if isinstance(pipeline, (str, os.PathLike)):
            source = f"Albumentations pipeline {os.fspath(pipeline)}"
            pipeline = load_pipeline(os.fspath(pipeline))
        check_pipeline(pipeline, source)
        self.source = source
        super().__init__(_wrap(pipeline), min_instance_pixels, min_box_side, seed_base)

    def _copy(self, pipeline):
        import copy

        return copy.deepcopy(pipeline)

    def _reseed(self, pipeline, seed: int) -> None:
        pipeline.set_random_seed(seed)  # the Compose and every transform in it

    def _augment_image(self, pipeline, image):
        return pipeline(image=image, bboxes=np.zeros((0, 4)), **{_IDS: np.zeros(0, np.int64)})["image"]

    def _augment_masks(self, pipeline, image, masks):
        # The masks' own tight boxes go along for box-aware transforms; ours come from the masks afterwards.
        boxes = _to_xyxy(tight_boxes(masks))
        out = pipeline(
            image=image, masks=masks.astype(np.uint8), bboxes=boxes, **{_IDS: np.arange(len(masks), dtype=np.int64)}
        )
        return out["image"], np.asarray(out["masks"]) > 0

    def _augment_boxes(self, pipeline, image, boxes):
        out = pipeline(image=image, bboxes=_to_xyxy(boxes), **{_IDS: np.arange(len(boxes), dtype=np.int64)})
        out_boxes = np.zeros((len(boxes), 4), np.float32)
        for box, index in zip(np.asarray(out["bboxes"]).reshape(-1, 4), np.asarray(out[_IDS], np.int64)):
            out_boxes[index] = (box[1], box[0], box[3], box[2])
        return out["image"], out_boxes
