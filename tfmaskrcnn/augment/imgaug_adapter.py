"""Run an imgaug pipeline in the Mask R-CNN input pipeline, masks and boxes kept aligned.

For teams that already have imgaug pipelines. `ImgaugAugmenter(pipeline)` has the same
signature as the in-graph augmenter, so `AugmentingParser(..., augmenter=...)` takes
either. Instance masks go through imgaug as one multi-channel segmentation map (one
channel per instance, so overlaps survive; imgaug warps segmentation maps with
nearest-neighbour), boxes are recomputed as the tight boxes of the augmented masks, and
instances that end up empty or tiny are dropped with their class and extras (that part,
shared with the Albumentations adapter, is `tfmaskrcnn.augment.python_augmenter`).

imgaug 0.4.0 is unmaintained and imports only with numpy < 2, so it is an optional
extra (`pip install 'tfmaskrcnn[imgaug]'`) and imported only here. It runs as Python
inside `tf.numpy_function`: it holds the GIL and is much slower than the in-graph ops
(see docs/benchmarks.md), and a SavedModel or TPU input pipeline cannot contain it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfmaskrcnn.augment.python_augmenter import PythonAugmenter

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


class ImgaugAugmenter(PythonAugmenter):
    """`augmenter(image, boxes, masks, classes, extras=None, seed=None)` running an imgaug pipeline.

    Seeding, threads, dropping and the tf.numpy_function wrapper are
    `python_augmenter.PythonAugmenter`'s; this class only speaks imgaug.
    """

    def __init__(
        self, pipeline, min_instance_pixels: int = 4, min_box_side: float = 1.0, seed_base: Optional[int] = None
    ):
        iaa = require_imgaug()
        if not isinstance(pipeline, iaa.meta.Augmenter):
            raise TypeError(f"ImgaugAugmenter needs an imgaug.augmenters.Augmenter, got {type(pipeline).__name__}")
        super().__init__(pipeline, min_instance_pixels, min_box_side, seed_base)

    def _copy(self, pipeline):
        return pipeline.deepcopy()

    def _reseed(self, pipeline, seed: int) -> None:
        pipeline.seed_(seed)

    def _augment_image(self, pipeline, image):
        return pipeline(image=image)

    def _augment_masks(self, pipeline, image, masks):
        from imgaug.augmentables.segmaps import SegmentationMapsOnImage

        # One channel per instance; imgaug warps segmentation maps with nearest-neighbour.
        segmap = SegmentationMapsOnImage(np.transpose(masks, (1, 2, 0)), shape=image.shape)
        out_image, out_segmap = pipeline(image=image, segmentation_maps=segmap)
        return out_image, np.transpose(out_segmap.get_arr(), (2, 0, 1)).astype(bool)

    def _augment_boxes(self, pipeline, image, boxes):
        from imgaug.augmentables.bbs import BoundingBox, BoundingBoxesOnImage

        height, width = image.shape[:2]
        bbs = BoundingBoxesOnImage(
            [BoundingBox(x1=b[1] * width, y1=b[0] * height, x2=b[3] * width, y2=b[2] * height) for b in boxes],
            shape=image.shape,
        )
        out_image, out_bbs = pipeline(image=image, bounding_boxes=bbs)
        h2, w2 = out_image.shape[:2]
        out_boxes = np.zeros((len(boxes), 4), np.float32)
        # Box by box (not BoundingBoxesOnImage.clip_out_of_image, which removes boxes
        # and so shifts the indices that tie boxes to classes and extras).
        for i, box in enumerate(out_bbs.bounding_boxes):
            if box.is_partly_within_image(out_image.shape):
                b = box.clip_out_of_image(out_image.shape)
                out_boxes[i] = (b.y1 / h2, b.x1 / w2, b.y2 / h2, b.x2 / w2)
        return out_image, out_boxes
