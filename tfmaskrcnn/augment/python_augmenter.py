"""What every Python augmentation library adapter shares: seeding, threads, dropping, tf.numpy_function.

An adapter (`ImgaugAugmenter`, `AlbumentationsAugmenter`) subclasses `PythonAugmenter` and
holds only the translation to its library: how to copy and seed a pipeline, and how to run
it on (image, instance masks) and on (image, boxes). Everything else is here, once:

* the signature of the in-graph augmenter, `augmenter(image, boxes, masks, classes,
  extras=None, seed=None)`, so `AugmentingParser(..., augmenter=...)` takes any of them;
* one mask per instance goes in and comes out, so overlapping instances survive; the boxes
  are then the tight boxes of the augmented masks (never the library's own box
  arithmetic, which grows rotated boxes);
* instances that end up empty, below `min_instance_pixels` mask pixels or thinner than
  `min_box_side` pixels are dropped together with their class and every extra (crowd
  flag, area, attributes), and the area extra is rescaled by the mask's pixel change;
* the library runs as Python inside `tf.numpy_function`. Augmentation libraries keep their
  random state in the pipeline object and are not thread-safe, so each tf.data worker
  thread gets its own copy of the pipeline, seeded once from `seed_base`; with a `seed`
  tensor the thread's copy is re-seeded from it, so the same seed gives the same output
  whatever thread runs it.

Python in the input pipeline holds the GIL and cannot be part of a SavedModel or a TPU
input pipeline; docs/augmentation.md says when that is worth it.
"""

from __future__ import annotations

import threading
from typing import Optional, Tuple

import numpy as np

from tfmaskrcnn.augment.ops import AREA_KEY


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Normalized (ymin, xmin, ymax, xmax) pixel-edge boxes of [N, H, W] masks; zeros if empty."""
    n, height, width = masks.shape
    boxes = np.zeros((n, 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(n):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (ys[0] / height, xs[0] / width, (ys[-1] + 1) / height, (xs[-1] + 1) / width)
    return boxes


def element_seed(seed_value: np.ndarray) -> int:
    """One non-negative int from the [2] per-element seed tensor the parser hands out."""
    return (int(seed_value[0]) * 1000003 + int(seed_value[1])) % (2**31)


class PythonAugmenter:
    """Base of the library adapters; subclasses implement the four `_` methods below."""

    def __init__(
        self, pipeline, min_instance_pixels: int = 4, min_box_side: float = 1.0, seed_base: Optional[int] = None
    ):
        self._pipeline = pipeline
        self._min_pixels = max(int(min_instance_pixels), 1)
        self._min_box_side = float(min_box_side)
        self._seeds = np.random.SeedSequence(seed_base)
        self._seeds_lock = threading.Lock()
        self._local = threading.local()

    # ------------------------------------------------ the translation, per library
    def _copy(self, pipeline):
        """An independent copy of `pipeline` (its own random state)."""
        raise NotImplementedError

    def _reseed(self, pipeline, seed: int) -> None:
        """Re-seeds `pipeline` and everything in it, so the next call is a function of `seed`."""
        raise NotImplementedError

    def _augment_masks(self, pipeline, image: np.ndarray, masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], masks bool [N, H, W], N >= 1) -> (image, masks bool [N, H', W'])."""
        raise NotImplementedError

    def _augment_boxes(self, pipeline, image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(image, normalized boxes [N, 4]) -> (image, boxes [N, 4]); all-zero rows for boxes lost."""
        raise NotImplementedError

    def _augment_image(self, pipeline, image: np.ndarray) -> np.ndarray:
        """An example without instances: only the image."""
        raise NotImplementedError

    # ------------------------------------------------ shared
    def _thread_pipeline(self):
        if getattr(self._local, "pipeline", None) is None:
            with self._seeds_lock:
                entropy = int(self._seeds.spawn(1)[0].generate_state(1)[0])
            pipeline = self._copy(self._pipeline)
            self._reseed(pipeline, entropy)
            self._local.pipeline = pipeline
        return self._local.pipeline

    def augment_numpy(
        self, image: np.ndarray, boxes: np.ndarray, masks: Optional[np.ndarray], seed: Optional[int] = None
    ):
        """Returns (image uint8, boxes [M, 4], masks [M, H', W'] float or None, kept indices [M], area ratio [M])."""
        pipeline = self._thread_pipeline()
        if seed is not None:
            self._reseed(pipeline, int(seed))
        image = np.clip(np.round(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
        n = len(boxes)
        if masks is not None:
            on = masks > 0.5
            if n == 0:
                out_image = self._augment_image(pipeline, image)
                out_masks = np.zeros((0,) + out_image.shape[:2], bool)
            else:
                out_image, out_masks = self._augment_masks(pipeline, image, on)
            out_boxes = tight_boxes(out_masks)
            pixels = out_masks.sum(axis=(1, 2))
            before = on.sum(axis=(1, 2))
            ratio = np.where(before > 0, pixels / np.maximum(before, 1), 1.0)
        else:
            if n == 0:
                out_image, out_boxes = self._augment_image(pipeline, image), np.zeros((0, 4), np.float32)
            else:
                out_image, out_boxes = self._augment_boxes(pipeline, image, np.asarray(boxes, np.float32))
            out_masks, pixels = None, None
            ratio = np.ones(n)
        h2, w2 = out_image.shape[:2]
        sides = (out_boxes[:, 2:] - out_boxes[:, :2]) * [h2, w2]
        keep = (sides >= self._min_box_side).all(axis=1) & (sides > 0).all(axis=1)
        if pixels is not None:
            keep &= pixels >= self._min_pixels
        kept = np.flatnonzero(keep)
        out_masks = None if out_masks is None else out_masks[kept].astype(np.float32)
        out_image = np.ascontiguousarray(out_image, np.uint8)
        return (
            out_image,
            out_boxes[kept].astype(np.float32),
            out_masks,
            kept.astype(np.int64),
            ratio[kept].astype(np.float32),
        )

    def __call__(self, image, boxes, masks, classes, extras=None, seed=None):
        import tensorflow as tf

        has_masks = masks is not None
        use_seed = seed is not None
        seed_value = tf.constant([0, 0], tf.int64) if seed is None else tf.cast(seed, tf.int64)

        def run(image, boxes, masks, seed_value):
            out = self.augment_numpy(
                image, boxes, masks if has_masks else None, element_seed(seed_value) if use_seed else None
            )
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
