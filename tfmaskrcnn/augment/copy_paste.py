"""In-graph copy-paste (Ghiasi et al., CVPR 2021) from an instance bank, class-balanced.

Pastes up to `max_instances` instances from an `InstanceBank` (fixed-size crops of
training instances held as tensors; built from the records by
`tfmaskrcnn.dataloaders.copy_paste`) into one decoded example, in pure TF ops that run
inside a `tf.data` map:

1. n ~ U{0..max_instances} (fewer when the example would exceed `max_total_instances`);
2. each pasted instance's class is drawn from the bank's class probabilities (the
   class-balancing part: repeat factors, inverse frequency or uniform), then one of the
   bank's instances of that class uniformly;
3. it is rescaled to `scale` x its size in its source image (scale ~ U[scale_min,
   scale_max]; shrunk to fit when larger than the image) and placed at a uniform
   position, in whole pixels;
4. its alpha is the binary pasted mask, Gaussian-smoothed with `blend_sigma` (0: hard
   edge) and snapped to exactly 0 / 1 below 1e-3 / above 1 - 1e-3; the image becomes
   `image * (1 - alpha) + object * alpha`, later pastes over earlier ones;
5. the masks of everything underneath (the example's instances, and earlier pastes) are
   cut: `mask &= ~pasted`; the boxes of the cut instances are recomputed as the tight
   boxes of their cut masks (untouched instances keep the annotator's box), the area
   extra is rescaled with the pixel count, and instances left with fewer than
   `min_instance_pixels` pixels are dropped with their class and extras;
6. the pasted instances are appended with their class, `is_crowd` False, `area` their
   pixel count, zeros for other extras, and `extras[PASTED_KEY]` True (False for the
   example's own instances: the preview draws pasted ones differently).

Work per pasted instance is confined to its box plus the blur margin: the crop is warped
straight into that region (one `ImageProjectiveTransformV3` call, bilinear, 4 channels:
RGB and the mask), blended there, and the region is put back by concatenation, so the
image outside it is copied, never recomputed. The full-image work is the mask cut and
the box / pixel count pass over the instance masks, done once for all pastes.

Conventions are `augment.ops`': image uint8 (or float in [0, 255]) [H, W, 3], boxes
normalized (ymin, xmin, ymax, xmax) [N, 4], masks float 0/1 [N, H, W], classes [N],
extras a dict of [N, ...] tensors. Determinism: every draw is stateless from `seed` [2].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tfmaskrcnn.augment import ops

# Extra added to the output: True for pasted instances.
PASTED_KEY = "pasted"
CLASS_SAMPLING = ("repeat_factor", "inverse", "uniform")

# Stable sub-seed indices (adding a draw never changes the others).
_SEED_COUNT, _SEED_CLASS, _SEED_PICK, _SEED_PLACE = 1, 2, 3, 4
# Alpha values this close to 0 / 1 are snapped to exactly 0 / 1: the interior of a pasted
# object is exactly the object, and the image a blur tail barely reaches is unchanged.
_SNAP = 1e-3


@dataclasses.dataclass(frozen=True)
class CopyPasteParams:
    """Plain numbers of the copy-paste op, validated once (each error says the fix)."""

    max_instances: int = 3
    scale_min: float = 0.5
    scale_max: float = 1.5
    blend_sigma: float = 1.0
    min_instance_pixels: int = 4
    # The parser's max_num_instances: pastes stop there (Model Garden clips beyond it).
    max_total_instances: Optional[int] = None

    def __post_init__(self):
        where = "task.train_data.parser.copy_paste"
        if not (isinstance(self.max_instances, int) and self.max_instances >= 0):
            raise ValueError(f"{where}.max_instances={self.max_instances!r}: use an integer >= 0 (3 is typical)")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"{where}: scale_min={self.scale_min}, scale_max={self.scale_max}; need 0 < scale_min <= scale_max "
                "(sizes relative to the instance's size in its own image, e.g. 0.5 and 1.5)"
            )
        if not 0.0 <= self.blend_sigma <= 10.0:
            raise ValueError(f"{where}.blend_sigma={self.blend_sigma}: use 0 (hard edges) to 10 pixels (1 is typical)")
        if self.min_instance_pixels < 1:
            raise ValueError(f"min_instance_pixels={self.min_instance_pixels}: use 1 or more")
        if self.max_total_instances is not None and self.max_total_instances < 1:
            raise ValueError(f"max_total_instances={self.max_total_instances}: use None or a positive number")

    @property
    def blur_radius(self) -> int:
        return int(math.ceil(3.0 * self.blend_sigma)) if self.blend_sigma > 0 else 0


class InstanceBank(NamedTuple):
    """Instances as tensors, sorted by class. Per-class arrays are indexed by class id (0..K).

    pixels:       uint8 [B, S, S, 4]: RGB of the instance's tight box resized to S x S (pixels
                  outside its mask replaced by the mean colour inside it, so no background
                  bleeds in when it is resampled) and its mask * 255.
    sizes:        float32 [B, 2]: height and width of the tight box in its source image (pixels).
    classes:      int32 [B].
    class_start:  int32 [K + 1]: index of the first instance of each class.
    class_count:  int32 [K + 1]: instances of each class (0 for background and absent classes).
    class_probs:  float32 [K + 1]: probability to paste each class (0 where class_count is 0).
    """

    pixels: tf.Tensor
    sizes: tf.Tensor
    classes: tf.Tensor
    class_start: tf.Tensor
    class_count: tf.Tensor
    class_probs: tf.Tensor


def make_bank(pixels, sizes, classes, class_probs) -> InstanceBank:
    """An `InstanceBank` from numpy arrays (any instance order; sorted by class here).

    `class_probs` [K + 1] (index = class id) is renormalized over the classes present.
    """
    pixels, sizes, classes = np.asarray(pixels, np.uint8), np.asarray(sizes, np.float32), np.asarray(classes)
    probs = np.asarray(class_probs, np.float64)
    if pixels.ndim != 4 or pixels.shape[-1] != 4 or pixels.shape[1] != pixels.shape[2]:
        raise ValueError(f"bank pixels must be [B, S, S, 4] (RGB + mask), got {pixels.shape}")
    if not len(pixels) == len(sizes) == len(classes) or len(classes) == 0:
        raise ValueError(
            f"bank has {len(pixels)} crops, {len(sizes)} sizes, {len(classes)} classes; need the same number, > 0"
        )
    if classes.min() < 1 or classes.max() >= len(probs):
        raise ValueError(f"bank classes must be in 1..{len(probs) - 1}, got {classes.min()}..{classes.max()}")
    order = np.argsort(classes, kind="stable")
    pixels, sizes, classes = pixels[order], sizes[order], classes[order].astype(np.int32)
    count = np.bincount(classes, minlength=len(probs)).astype(np.int32)
    start = (np.cumsum(count) - count).astype(np.int32)
    probs = np.where(count > 0, np.maximum(probs, 0.0), 0.0)
    if not probs.sum() > 0:
        raise ValueError("no class of the bank has a positive paste probability")
    probs = probs / probs.sum()
    return InstanceBank(
        pixels=tf.convert_to_tensor(pixels),
        sizes=tf.convert_to_tensor(sizes),
        classes=tf.convert_to_tensor(classes),
        class_start=tf.convert_to_tensor(start),
        class_count=tf.convert_to_tensor(count),
        class_probs=tf.convert_to_tensor(probs.astype(np.float32)),
    )


def _blur_alpha(mask: tf.Tensor, sigma: float, radius: int) -> tf.Tensor:
    """Separable Gaussian blur of a float [h, w] mask (zeros beyond it), snapped to 0 / 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * np.square(x / sigma))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    out = tf.nn.conv2d(mask[None, :, :, None], kernel.reshape(-1, 1, 1, 1), 1, "SAME")
    out = tf.nn.conv2d(out, kernel.reshape(1, -1, 1, 1), 1, "SAME")[0, :, :, 0]
    out = tf.where(out > 1.0 - _SNAP, 1.0, out)
    return tf.where(out < _SNAP, 0.0, out)


def _paste_one(image, bank: InstanceBank, index, seed, params: CopyPasteParams):
    """Pastes bank instance `index` into `image`.

    Returns (new image, 0/1 mask [H, W] float32, alpha [H, W], the warped object [h, w, 3] of
    the region it was blended in, and that region's offset (y, x) [2]).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    draws = tf.random.stateless_uniform([3], seed)
    size = bank.sizes[index]
    scale = params.scale_min + (params.scale_max - params.scale_min) * draws[0]
    fit = tf.minimum(1.0, tf.minimum(hf / (size[0] * scale), wf / (size[1] * scale)))
    th = tf.clip_by_value(tf.cast(tf.round(size[0] * scale * fit), tf.int32), 1, height)
    tw = tf.clip_by_value(tf.cast(tf.round(size[1] * scale * fit), tf.int32), 1, width)
    y0 = tf.minimum(tf.cast(draws[1] * tf.cast(height - th + 1, tf.float32), tf.int32), height - th)
    x0 = tf.minimum(tf.cast(draws[2] * tf.cast(width - tw + 1, tf.float32), tf.int32), width - tw)
    r = params.blur_radius
    ry0, rx0 = tf.maximum(y0 - r, 0), tf.maximum(x0 - r, 0)
    ry1, rx1 = tf.minimum(y0 + th + r, height), tf.minimum(x0 + tw + r, width)
    rh, rw = ry1 - ry0, rx1 - rx0

    crop = tf.cast(bank.pixels[index], tf.float32)  # [S, S, 4]
    side = tf.cast(tf.shape(crop)[0], tf.float32)
    sy, sx = side / tf.cast(th, tf.float32), side / tf.cast(tw, tf.float32)
    # Output pixel (x, y) of the region -> crop pixel, pixel centres matched.
    offset_x = (tf.cast(rx0 - x0, tf.float32) + 0.5) * sx - 0.5
    offset_y = (tf.cast(ry0 - y0, tf.float32) + 0.5) * sy - 0.5
    transform = tf.stack([sx, 0.0, offset_x, 0.0, sy, offset_y, 0.0, 0.0])[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=crop[None],
        transforms=transform,
        output_shape=tf.stack([rh, rw]),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="NEAREST",  # edge colours, not black, at the box border; the mask is cut to the box below
    )[0]
    ys = tf.range(rh)[:, None] + ry0
    xs = tf.range(rw)[None, :] + rx0
    in_box = (ys >= y0) & (ys < y0 + th) & (xs >= x0) & (xs < x0 + tw)
    mask = tf.cast((warped[..., 3] >= 127.5) & in_box, tf.float32)
    alpha = _blur_alpha(mask, params.blend_sigma, r) if r > 0 else mask

    # Blend inside the region only; the rest of the image is copied, not recomputed.
    region = tf.cast(image[ry0:ry1, rx0:rx1], tf.float32)
    a = alpha[..., None]
    blended = ops.clip_cast_like(region * (1.0 - a) + warped[..., :3] * a, image)
    middle = tf.concat([image[ry0:ry1, :rx0], blended, image[ry0:ry1, rx1:]], axis=1)
    new_image = tf.concat([image[:ry0], middle, image[ry1:]], axis=0)
    full_mask = tf.pad(mask, [[ry0, height - ry1], [rx0, width - rx1]])
    full_alpha = tf.pad(alpha, [[ry0, height - ry1], [rx0, width - rx1]])
    return new_image, full_mask, full_alpha, warped[..., :3], tf.stack([ry0, rx0])


def copy_paste(
    image: tf.Tensor,
    boxes: tf.Tensor,
    masks: tf.Tensor,
    classes: tf.Tensor,
    extras: Optional[Dict[str, tf.Tensor]],
    seed: tf.Tensor,
    bank: InstanceBank,
    params: CopyPasteParams,
    return_layers: bool = False,
):
    """Pastes bank instances into one example; returns (image, boxes, masks, classes, extras).

    With `return_layers`, also a dict: `alpha` [H, W] (the pasted objects' combined alpha:
    1 where the output is entirely pasted, 0 where it is the input), `layer` [H, W, 3] (the
    pasted objects composited, float; equals the output where alpha is 1), `top` [H, W] (the
    largest weight of one pasted object in the output: 1 where a pixel is one object's alone,
    not blended with a later paste's soft edge) and `num_pasted`.
    `seed` is an int [2] tensor: the output is a pure function of the inputs and it.
    """
    if masks is None:
        raise ValueError("copy-paste needs instance masks: set task.model.include_mask: true")
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    image = tf.convert_to_tensor(image)
    boxes = tf.cast(boxes, tf.float32)
    masks = tf.convert_to_tensor(masks)
    classes = tf.convert_to_tensor(classes)
    extras = {k: tf.convert_to_tensor(v) for k, v in (extras or {}).items()}
    num = tf.shape(classes)[0]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    slots = params.max_instances

    def unchanged():
        out_extras = dict(extras)
        out_extras[PASTED_KEY] = tf.zeros([num], tf.bool)
        return {"image": image, "boxes": boxes, "masks": masks, "classes": classes, "extras": out_extras}

    zeros_hw = tf.zeros(tf.stack([height, width]), tf.float32)
    if slots == 0:
        sample = unchanged()
        result = (sample["image"], sample["boxes"], sample["masks"], sample["classes"], sample["extras"])
        layers = {"alpha": zeros_hw, "layer": tf.zeros(tf.stack([height, width, 3])), "num_pasted": tf.constant(0)}
        return (result, layers) if return_layers else result

    sub = lambda i: tf.random.experimental.stateless_fold_in(seed, i)  # noqa: E731
    n = tf.random.stateless_uniform([], sub(_SEED_COUNT), 0, slots + 1, tf.int32)
    if params.max_total_instances is not None:
        n = tf.minimum(n, tf.maximum(params.max_total_instances - num, 0))
    logits = tf.math.log(bank.class_probs)[None]
    pasted_classes = tf.random.stateless_categorical(logits, slots, sub(_SEED_CLASS), dtype=tf.int32)[0]
    picks = tf.random.stateless_uniform([slots], sub(_SEED_PICK))
    count = tf.gather(bank.class_count, pasted_classes)
    indices = tf.gather(bank.class_start, pasted_classes) + tf.minimum(
        tf.cast(picks * tf.cast(count, tf.float32), tf.int32), count - 1
    )
    pasted_masks, alphas, layers = [], [], []
    out_image = image
    for i in range(slots):

        def paste(i=i, current=out_image):
            new_image, mask, alpha, obj, offset = _paste_one(
                current, bank, indices[i], tf.random.experimental.stateless_fold_in(sub(_SEED_PLACE), i), params
            )
            layer = zeros_hw[..., None]  # only drawn for `return_layers`
            if return_layers:
                below, right = height - offset[0] - tf.shape(obj)[0], width - offset[1] - tf.shape(obj)[1]
                layer = tf.pad(obj, [[offset[0], below], [offset[1], right], [0, 0]])
            return new_image, mask, alpha, layer

        def skip(current=out_image):
            layer = tf.zeros(tf.stack([height, width, 3])) if return_layers else zeros_hw[..., None]
            return current, zeros_hw, zeros_hw, layer

        out_image, mask, alpha, layer = tf.cond(i < n, paste, skip)
        pasted_masks.append(mask)
        alphas.append(alpha)
        layers.append(layer)

    def apply():
        # Each paste cuts what lies under it: the example's masks and earlier pastes.
        union = zeros_hw
        cut_pasted = []
        for mask in reversed(pasted_masks):
            cut_pasted.append(mask * (1.0 - union))
            union = tf.maximum(union, mask)
        cut_pasted = tf.stack(cut_pasted[::-1])[:n]
        keep = tf.cast(1.0 - union, masks.dtype)
        cut = masks * keep[None]
        all_masks = tf.concat([cut, tf.cast(cut_pasted, masks.dtype)], axis=0)
        new_boxes, pixels = ops.mask_statistics(all_masks)
        touched = tf.reduce_any(tf.not_equal(cut, masks), axis=[1, 2])
        touched = tf.concat([touched, tf.ones([n], tf.bool)], axis=0)
        old_boxes = tf.concat([boxes, tf.zeros(tf.stack([n, 4]))], axis=0)
        out_extras = {}
        for key, value in extras.items():
            fill = tf.zeros(tf.concat([[n], tf.shape(value)[1:]], axis=0), value.dtype)
            out_extras[key] = tf.concat([value, fill], axis=0)
        if ops.AREA_KEY in extras:
            area = extras[ops.AREA_KEY]
            before = tf.reduce_sum(tf.cast(masks, tf.float32), axis=[1, 2])
            ratio = tf.where(before > 0, pixels[:num] / tf.maximum(before, 1.0), tf.ones_like(before))
            out_extras[ops.AREA_KEY] = tf.concat(
                [area * tf.cast(ratio, area.dtype), tf.cast(pixels[num:], area.dtype)], 0
            )
        out_extras[PASTED_KEY] = tf.concat([tf.zeros([num], tf.bool), tf.ones([n], tf.bool)], axis=0)
        sample = {
            "image": out_image,
            "boxes": tf.where(touched[:, None], new_boxes, old_boxes),
            "masks": all_masks,
            "classes": tf.concat([classes, tf.cast(pasted_classes[:n], classes.dtype)], axis=0),
            "extras": out_extras,
        }
        return ops.drop_small_instances(sample, params.min_instance_pixels, 1.0, pixels)

    sample = tf.cond(n > 0, apply, unchanged)
    result = (sample["image"], sample["boxes"], sample["masks"], sample["classes"], sample["extras"])
    if not return_layers:
        return result
    coverage, layer, top = zeros_hw, tf.zeros(tf.stack([height, width, 3])), zeros_hw
    for i, (alpha, obj) in enumerate(zip(alphas, layers)):  # "over" compositing in paste order
        layer = layer * (1.0 - alpha[..., None]) + obj * alpha[..., None]
        coverage = coverage + alpha * (1.0 - coverage)
        visible = alpha
        for later in alphas[i + 1 :]:
            visible = visible * (1.0 - later)
        top = tf.maximum(top, visible)
    return result, {"alpha": coverage, "layer": layer, "top": top, "num_pasted": n}


def make_copy_paster(bank: InstanceBank, params: CopyPasteParams, base_seed: Optional[int] = None):
    """`paster(image, boxes, masks, classes, extras, seed=None)` -> (image, boxes, masks, classes, extras).

    The signature of an augmenter (`augment.presets.make_augmenter`), so the parser runs it
    through the same hook; without `seed`, the per-element seed is drawn as the augmenter
    draws it (a stateful op seeded with `base_seed`; see `augment.presets`).
    """

    def paster(image, boxes, masks, classes, extras=None, seed=None):
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32, seed=base_seed)
        return copy_paste(image, boxes, masks, classes, extras, seed, bank, params)

    paster.params = params
    paster.bank = bank
    return paster
