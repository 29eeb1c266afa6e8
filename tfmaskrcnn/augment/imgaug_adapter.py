"""Run an imgaug pipeline in the Mask R-CNN input pipeline, masks and boxes kept aligned.

For teams that already have imgaug pipelines. `ImgaugAugmenter(pipeline)` has the same
signature as the in-graph augmenter, so `AugmentingParser(..., augmenter=...)` takes
either. Instance masks go through imgaug as one multi-channel segmentation map (one
channel per instance, so overlaps survive; imgaug warps segmentation maps with
nearest-neighbour), boxes are recomputed as the tight boxes of the augmented masks, and
instances that end up empty or tiny are dropped with their class and extras.

imgaug 0.4.0 is unmaintained and imports only with numpy < 2, so it is an optional
extra (`pip install 'tfmaskrcnn[imgaug]'`) and imported only here. It runs as Python
inside `tf.numpy_function`: it holds the GIL and is much slower than the in-graph ops
(see docs/benchmarks.md), and a SavedModel or TPU input pipeline cannot contain it.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from tfmaskrcnn.augment.ops import AREA_KEY

INSTALL_HINT = "pip install 'tfmaskrcnn[imgaug]' (imgaug needs numpy<2)"


def require_imgaug():
    """Imports imgaug.augmenters or raises an ImportError that says how to install it."""
    try:
        import imgaug.augmenters as iaa  # noqa: F401
    except (ImportError, AttributeError) as err:  # numpy>=2 fails inside imgaug with AttributeError
        raise ImportError(
            f"the imgaug adapter cannot import imgaug ({type(err).__name__}: {err}); install it with: {INSTALL_HINT}"
        ) from err
    return iaa


def standard_pipeline():
    """An imgaug pipeline close to the in-graph `standard` preset (for comparisons).

    Like `standard`, it leaves flips and scale jitter to Model Garden's parser, and warps
    about half of the images: 1 - (1 - 0.3)(1 - 0.15)(1 - 0.2) = 0.52 is how often at
    least one of standard's rotation, shear and translation happens.
    """
    iaa = require_imgaug()
    return iaa.Sequential(
        [
            iaa.Sometimes(
                0.52, iaa.Affine(rotate=(-10, 10), shear=(-5, 5), translate_percent=(-0.1, 0.1), order=1, cval=115)
            ),
            iaa.Sometimes(0.5, iaa.AddToBrightness((-38, 38))),
            iaa.Sometimes(0.5, iaa.LinearContrast((0.8, 1.2))),
            iaa.Sometimes(0.5, iaa.MultiplySaturation((0.8, 1.2))),
            iaa.Sometimes(0.3, iaa.AddToHue((-8, 8))),
            iaa.Sometimes(0.1, iaa.GaussianBlur((0.1, 1.0))),
            iaa.Sometimes(0.1, iaa.AdditiveGaussianNoise(scale=(0, 0.02 * 255))),
        ]
    )


def _tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Normalized (ymin, xmin, ymax, xmax) pixel-edge boxes of [N, H, W] masks; zeros if empty."""
    n, height, width = masks.shape
    boxes = np.zeros((n, 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (ys[0] / height, xs[0] / width, (ys[-1] + 1) / height, (xs[-1] + 1) / width)
    return boxes


class ImgaugAugmenter:
    """`augmenter(image, boxes, masks, classes, extras=None, seed=None)` running an imgaug pipeline.

    With `seed` (an int [2] tensor) the pipeline is re-seeded for that call, so the same
    seed gives the same output. Without it each tf.data worker thread uses its own copy
    of the pipeline, seeded once from `seed_base`, so parallel map calls never share
    imgaug's (not thread-safe) random state.
    """

    def __init__(
        self, pipeline, min_instance_pixels: int = 4, min_box_side: float = 1.0, seed_base: Optional[int] = None
    ):
        iaa = require_imgaug()
        if not isinstance(pipeline, iaa.meta.Augmenter):
            raise TypeError(f"ImgaugAugmenter needs an imgaug.augmenters.Augmenter, got {type(pipeline).__name__}")
        self._pipeline = pipeline
        self._min_pixels = max(int(min_instance_pixels), 1)
        self._min_box_side = float(min_box_side)
        self._seeds = np.random.SeedSequence(seed_base)
        self._seeds_lock = threading.Lock()
        self._local = threading.local()

    def _thread_pipeline(self):
        if getattr(self._local, "pipeline", None) is None:
            with self._seeds_lock:
                entropy = int(self._seeds.spawn(1)[0].generate_state(1)[0])
            self._local.pipeline = self._pipeline.deepcopy()
            self._local.pipeline.seed_(entropy)
        return self._local.pipeline

    def augment_numpy(
        self, image: np.ndarray, boxes: np.ndarray, masks: Optional[np.ndarray], seed: Optional[int] = None
    ):
        """Returns (image uint8, boxes [M, 4], masks [M, H', W'] or None, kept indices [M], area ratio [M])."""
        from imgaug.augmentables.bbs import BoundingBox, BoundingBoxesOnImage
        from imgaug.augmentables.segmaps import SegmentationMapsOnImage

        if seed is None:
            pipeline = self._thread_pipeline()
        else:
            pipeline = self._pipeline.deepcopy()
            pipeline.seed_(int(seed))
        image = np.clip(np.round(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
        height, width = image.shape[:2]
        n = len(boxes)
        if masks is not None:
            on = masks > 0.5
            if n == 0:
                out_image = pipeline(image=image)
                out_masks = np.zeros((0,) + out_image.shape[:2], bool)
            else:
                segmap = SegmentationMapsOnImage(np.transpose(on, (1, 2, 0)), shape=image.shape)
                out_image, out_segmap = pipeline(image=image, segmentation_maps=segmap)
                out_masks = np.transpose(out_segmap.get_arr(), (2, 0, 1)).astype(bool)
            out_boxes = _tight_boxes(out_masks)
            pixels = out_masks.sum(axis=(1, 2))
            before = on.sum(axis=(1, 2))
            ratio = np.where(before > 0, pixels / np.maximum(before, 1), 1.0)
        else:
            bbs = BoundingBoxesOnImage(
                [BoundingBox(x1=b[1] * width, y1=b[0] * height, x2=b[3] * width, y2=b[2] * height) for b in boxes],
                shape=image.shape,
            )
            out_image, out_bbs = pipeline(image=image, bounding_boxes=bbs)
            h2, w2 = out_image.shape[:2]
            out_boxes = np.zeros((n, 4), np.float32)
            # Box by box (not BoundingBoxesOnImage.clip_out_of_image, which removes boxes
            # and so shifts the indices that tie boxes to classes and extras).
            for i, box in enumerate(out_bbs.bounding_boxes):
                if box.is_partly_within_image(out_image.shape):
                    b = box.clip_out_of_image(out_image.shape)
                    out_boxes[i] = (b.y1 / h2, b.x1 / w2, b.y2 / h2, b.x2 / w2)
            out_masks, pixels = None, None
            ratio = np.ones(n)
        h2, w2 = out_image.shape[:2]
        sides = (out_boxes[:, 2:] - out_boxes[:, :2]) * [h2, w2]
        keep = (sides >= self._min_box_side).all(axis=1) & (sides > 0).all(axis=1)
        if pixels is not None:
            keep &= pixels >= self._min_pixels
        kept = np.flatnonzero(keep)
        out_masks = None if out_masks is None else out_masks[kept].astype(np.float32)
        return out_image, out_boxes[kept], out_masks, kept.astype(np.int64), ratio[kept].astype(np.float32)

    def __call__(self, image, boxes, masks, classes, extras=None, seed=None):
        import tensorflow as tf

        has_masks = masks is not None
        use_seed = seed is not None
        seed_value = tf.constant([0, 0], tf.int64) if seed is None else tf.cast(seed, tf.int64)

        def run(image, boxes, masks, seed_value):
            element_seed = (int(seed_value[0]) * 1000003 + int(seed_value[1])) % (2**31) if use_seed else None
            out = self.augment_numpy(image, boxes, masks if has_masks else None, element_seed)
            out_image, out_boxes, out_masks, kept, ratio = out
            if out_masks is None:
                out_masks = np.zeros((0, 0, 0), np.float32)
            return out_image, out_boxes, out_masks, kept, ratio

        mask_input = masks if has_masks else tf.zeros([0, 0, 0], tf.float32)
        out_image, out_boxes, out_masks, kept, ratio = tf.numpy_function(
            run,
            [image, tf.cast(boxes, tf.float32), tf.cast(mask_input, tf.float32), seed_value],
            [tf.uint8, tf.float32, tf.float32, tf.int64, tf.float32],
            stateful=not use_seed,
        )
        out_image.set_shape([None, None, 3])
        out_boxes.set_shape([None, 4])
        out_masks.set_shape([None, None, None])
        kept.set_shape([None])
        ratio.set_shape([None])
        image = tf.convert_to_tensor(image)
        if image.dtype != tf.uint8:
            out_image = tf.cast(out_image, image.dtype)
        out_extras = {k: tf.gather(v, kept) for k, v in (extras or {}).items()}
        if AREA_KEY in out_extras:
            out_extras[AREA_KEY] = out_extras[AREA_KEY] * tf.cast(ratio, out_extras[AREA_KEY].dtype)
        return (
            out_image,
            out_boxes,
            tf.cast(out_masks, masks.dtype) if has_masks else None,
            tf.gather(classes, kept),
            out_extras,
        )
