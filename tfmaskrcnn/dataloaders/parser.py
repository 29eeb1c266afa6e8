"""Model Garden's Mask R-CNN parser with mask-consistent augmentation in front of it.

`AugmentingParser` runs our augmenter on the decoded example (original image size,
normalized boxes, full-image instance masks) and then hands the result to the stock
`maskrcnn_input.Parser._parse_train_data`, so Model Garden's scale jitter, crowd
skipping, anchor labelling and padding all still apply unchanged. Only its horizontal
flip moves here, in front of the augmenter, because ours is much faster (see the class).
Evaluation parsing is not touched.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf
from official.vision.dataloaders import maskrcnn_input

from tfmaskrcnn.augment import ops as augment

# Decoded keys that hold one value per instance besides boxes, masks and classes; they
# are handed to the augmenter as extras so that dropped instances drop them too.
_EXTRA_KEYS = {"groundtruth_is_crowd": "is_crowd", "groundtruth_area": "area"}


class AugmentingParser(maskrcnn_input.Parser):
    """`maskrcnn_input.Parser` plus `augmenter(image, boxes, masks, classes, extras)`.

    `augmenter` is a callable such as `augment_presets.build_augmenter(config)` (the
    in-graph ops, or an `AlbumentationsAugmenter` when `augmentation.albumentations` names
    a pipeline) or an `ImgaugAugmenter`, or None. It may return the image as uint8 or as
    float32 in [0, 1]: Model Garden's `normalize_image` takes both.

    `aug_rand_hflip` is done here, before the augmenter, instead of in the stock parser:
    the same flip with the same probability, but Model Garden flips the masks with a
    negative-stride slice that TF runs element by element (about 25 ms for a 640x480
    COCO image with 9 masks on one CPU core, while the rest of the stock train parse
    takes about 45 ms), and `augment.flip_left_right` reverses them in about 2 ms
    (docs/benchmarks.md). Everything else is the stock parser's: with no augmenter and
    no flip the output is bit-identical to it.

    `copy_paster` (same signature as `augmenter`; `dataloaders.copy_paste.build_copy_paster`)
    pastes bank instances into the decoded example before the flip and the augmenter.
    """

    def __init__(
        self,
        *args,
        augmenter: Optional[Callable] = None,
        aug_rand_hflip: bool = False,
        copy_paster: Optional[Callable] = None,
        **kwargs,
    ):
        super().__init__(*args, aug_rand_hflip=False, **kwargs)
        self._example_augmenter = augmenter
        self._copy_paster = copy_paster
        self._hflip_prob = 0.5 if aug_rand_hflip else 0.0  # Model Garden's probability

    def _parse_train_data(self, data):
        if self._copy_paster is not None:  # first, so the pasted objects are augmented with the rest
            data = augment_decoded(data, self._copy_paster)
        if self._hflip_prob > 0:
            data = random_flip_decoded(data, self._hflip_prob)
        if self._example_augmenter is not None:
            data = augment_decoded(data, self._example_augmenter)
        return super()._parse_train_data(data)


def random_flip_decoded(data: dict, prob: float) -> dict:
    """Flips a TfExampleDecoder output dict left-right with probability `prob`."""
    keys = {"image": "image", "boxes": "groundtruth_boxes", "masks": "groundtruth_instance_masks"}
    sample = {short: data[key] for short, key in keys.items() if key in data}
    flipped = tf.cond(tf.random.uniform([]) < prob, lambda: augment.flip_left_right(sample), lambda: dict(sample))
    data = dict(data)
    data.update({keys[short]: value for short, value in flipped.items()})
    # The PNG bytes describe the masks before the flip; nothing in training reads them.
    data.pop("groundtruth_instance_masks_png", None)
    return data


def augment_decoded(data: dict, augmenter: Callable) -> dict:
    """Applies `augmenter` to a TfExampleDecoder output dict; returns a new dict."""
    data = dict(data)
    extras = {short: data[key] for key, short in _EXTRA_KEYS.items() if key in data}
    attributes = data.get("groundtruth_attributes") or {}
    extras.update({f"attribute/{name}": value for name, value in attributes.items()})
    masks = data.get("groundtruth_instance_masks")
    image, boxes, masks, classes, extras = augmenter(
        data["image"], data["groundtruth_boxes"], masks, data["groundtruth_classes"], extras
    )
    data["image"] = image
    data["groundtruth_boxes"] = boxes
    data["groundtruth_classes"] = classes
    if masks is not None:
        data["groundtruth_instance_masks"] = masks
        # The PNG bytes describe the masks before augmentation; nothing downstream in
        # training reads them, and a stale copy would only mislead.
        data.pop("groundtruth_instance_masks_png", None)
    for key, short in _EXTRA_KEYS.items():
        if short in extras:
            data[key] = extras[short]
    if attributes:
        data["groundtruth_attributes"] = {name: extras[f"attribute/{name}"] for name in attributes}
    # rot90 may swap height and width; the stock parser reads the shape from the image.
    shape = tf.shape(image, out_type=tf.int64)
    if "height" in data:
        data["height"] = tf.cast(shape[0], data["height"].dtype)
    if "width" in data:
        data["width"] = tf.cast(shape[1], data["width"].dtype)
    return data
