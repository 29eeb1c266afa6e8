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

Speed: there is no branch per slot (a slot beyond n is a 1 x 1 box with an empty mask)
and one batched warp (`ImageProjectiveTransformV3`, bilinear, 4 channels: RGB and mask)
takes every crop straight to its target box plus the blur margin, its "region"; the
blur is one batched separable pass of shifted slices. Each object is blended in its
region only and put back by concatenation. The masks are cut in the window that holds
all regions, and only the instances a paste touched get new boxes and pixel counts; the
full-size work left is copying the image once and the masks about three times (the cut
put back, the pasted masks padded, the two concatenated).

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
    """Separable Gaussian blur of float masks [..., h, w] (zeros beyond them), snapped to 0 / 1.

    Written as sums of shifted slices: on the small, differently sized regions of a paste
    this is faster than `conv2d`, whose CPU kernel is set up again for every new shape.
    """
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * np.square(x / sigma))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    height, width = tf.shape(mask)[-2], tf.shape(mask)[-1]
    lead = [[0, 0]] * (len(mask.shape) - 2)
    padded = tf.pad(mask, lead + [[radius, radius], [0, 0]])
    out = tf.add_n([float(kernel[i]) * padded[..., i : i + height, :] for i in range(2 * radius + 1)])
    padded = tf.pad(out, lead + [[0, 0], [radius, radius]])
    out = tf.add_n([float(kernel[i]) * padded[..., i : i + width] for i in range(2 * radius + 1)])
    out = tf.where(out > 1.0 - _SNAP, 1.0, out)
    return tf.where(out < _SNAP, 0.0, out)


def _warp_slots(crops, th, tw, y0, x0, ry0, ry1, rx0, rx1, params: CopyPasteParams):
    """Every slot's crop [K, S, S, 4] warped to its th x tw box at (y0, x0), seen in its region
    (ry0:ry1, rx0:rx1), in one batched warp whose output is the largest region [RH, RW].

    Returns (object RGB [K, RH, RW, 3] float, 0/1 masks [K, RH, RW] float, alphas [K, RH, RW]);
    slot i's values are in [:ry1[i] - ry0[i], :rx1[i] - rx0[i]], zeros beyond.
    """
    side = tf.cast(tf.shape(crops)[1], tf.float32)
    sy, sx = side / tf.cast(th, tf.float32), side / tf.cast(tw, tf.float32)
    # Output pixel (x, y) of a region -> crop pixel, pixel centres matched.
    offset_x = (tf.cast(rx0 - x0, tf.float32) + 0.5) * sx - 0.5
    offset_y = (tf.cast(ry0 - y0, tf.float32) + 0.5) * sy - 0.5
    zeros = tf.zeros_like(sx)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(crops, tf.float32),
        transforms=tf.stack([sx, zeros, offset_x, zeros, sy, offset_y, zeros, zeros], axis=1),
        output_shape=tf.stack([tf.reduce_max(ry1 - ry0), tf.reduce_max(rx1 - rx0)]),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="NEAREST",  # edge colours, not black, at the box border; the mask is cut to the box below
    )
    shape = tf.shape(warped)
    ys = tf.range(shape[1])[None, :, None] + (ry0 - y0)[:, None, None]  # relative to the box
    xs = tf.range(shape[2])[None, None, :] + (rx0 - x0)[:, None, None]
    in_box = (ys >= 0) & (ys < th[:, None, None]) & (xs >= 0) & (xs < tw[:, None, None])
    masks = tf.cast((warped[..., 3] >= 127.5) & in_box, tf.float32)
    r = params.blur_radius
    alphas = _blur_alpha(masks, params.blend_sigma, r) if r > 0 else masks
    return warped[..., :3], masks, alphas


def _put(values, part, y, x, axis: int = 0):
    """`values` with `part` written at (y, x) of axes (axis, axis + 1): slices and concatenations, one copy."""
    lead = (slice(None),) * axis
    ph, pw = tf.shape(part)[axis], tf.shape(part)[axis + 1]
    rows = lead + (slice(y, y + ph),)
    middle = tf.concat([values[rows + (slice(None, x),)], part, values[rows + (slice(x + pw, None),)]], axis=axis + 1)
    return tf.concat([values[lead + (slice(None, y),)], middle, values[lead + (slice(y + ph, None),)]], axis=axis)


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

    All work but the final assembly of the masks is done in the window that holds the pastes
    (the union of their boxes plus the blur margin): the image outside it is copied, the
    example's masks are cut there, and only the instances a paste touched get new boxes.
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
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    slots, r = params.max_instances, params.blur_radius

    def unchanged():
        out_extras = dict(extras)
        out_extras[PASTED_KEY] = tf.zeros([num], tf.bool)
        return {"image": image, "boxes": boxes, "masks": masks, "classes": classes, "extras": out_extras}

    def no_layers():
        zeros = tf.zeros(tf.stack([height, width]))
        return {"alpha": zeros, "layer": tf.zeros(tf.stack([height, width, 3])), "top": zeros}

    if slots == 0:
        sample = unchanged()
        result = (sample["image"], sample["boxes"], sample["masks"], sample["classes"], sample["extras"])
        return (result, dict(no_layers(), num_pasted=tf.constant(0))) if return_layers else result

    # ------------------------------------------------------------ draws and geometry, all slots at once
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
    draws = tf.random.stateless_uniform([slots, 3], sub(_SEED_PLACE))
    sizes = tf.gather(bank.sizes, indices)
    scale = params.scale_min + (params.scale_max - params.scale_min) * draws[:, 0]
    fit = tf.minimum(1.0, tf.minimum(hf / (sizes[:, 0] * scale), wf / (sizes[:, 1] * scale)))
    th = tf.clip_by_value(tf.cast(tf.round(sizes[:, 0] * scale * fit), tf.int32), 1, height)
    tw = tf.clip_by_value(tf.cast(tf.round(sizes[:, 1] * scale * fit), tf.int32), 1, width)
    y0 = tf.minimum(tf.cast(draws[:, 1] * tf.cast(height - th + 1, tf.float32), tf.int32), height - th)
    x0 = tf.minimum(tf.cast(draws[:, 2] * tf.cast(width - tw + 1, tf.float32), tf.int32), width - tw)
    ry0, rx0 = tf.maximum(y0 - r, 0), tf.maximum(x0 - r, 0)
    ry1, rx1 = tf.minimum(y0 + th + r, height), tf.minimum(x0 + tw + r, width)
    active = tf.range(slots) < n
    wy0 = tf.reduce_min(tf.where(active, ry0, height))
    wx0 = tf.reduce_min(tf.where(active, rx0, width))
    wy1 = tf.reduce_max(tf.where(active, ry1, 0))
    wx1 = tf.reduce_max(tf.where(active, rx1, 0))
    # An inactive slot becomes a 1 x 1 box at the window's corner with nothing in it: no branch per slot.
    th, tw = tf.where(active, th, 1), tf.where(active, tw, 1)
    y0, ry0, ry1 = tf.where(active, y0, wy0), tf.where(active, ry0, wy0), tf.where(active, ry1, wy0 + 1)
    x0, rx0, rx1 = tf.where(active, x0, wx0), tf.where(active, rx0, wx0), tf.where(active, rx1, wx0 + 1)
    on = tf.cast(active, tf.float32)

    def apply():
        wh, ww = wy1 - wy0, wx1 - wx0
        window = image[wy0:wy1, wx0:wx1]
        canvas = tf.cast(window, tf.float32)
        pasted_masks, alphas, objects = [], [], []
        all_objects, all_masks, all_alphas = _warp_slots(
            tf.gather(bank.pixels, indices), th, tw, y0, x0, ry0, ry1, rx0, rx1, params
        )
        all_masks, all_alphas = all_masks * on[:, None, None], all_alphas * on[:, None, None]
        for i in range(slots):
            rh, rw = ry1[i] - ry0[i], rx1[i] - rx0[i]
            obj, mask, alpha = all_objects[i, :rh, :rw], all_masks[i, :rh, :rw], all_alphas[i, :rh, :rw]
            oy, ox = ry0[i] - wy0, rx0[i] - wx0
            part = canvas[oy : oy + rh, ox : ox + rw]
            a = alpha[..., None]
            canvas = _put(canvas, part * (1.0 - a) + obj * a, oy, ox)
            padding = [[oy, wh - oy - rh], [ox, ww - ox - rw]]
            pasted_masks.append(tf.pad(mask, padding))
            if return_layers:
                alphas.append(tf.pad(alpha, padding))
                objects.append(tf.pad(obj, padding + [[0, 0]]))
        new_image = _put(image, ops.clip_cast_like(canvas, image), wy0, wx0)

        # Each paste cuts what lies under it: earlier pastes and the example's own masks.
        stacked = tf.stack(pasted_masks)  # [slots, wh, ww]
        later = tf.math.cumsum(stacked, axis=0, exclusive=True, reverse=True) > 0.5
        pasted_cut = tf.where(later, 0.0, stacked)[:n]
        union = tf.reduce_max(stacked, axis=0)
        inside = masks[:, wy0:wy1, wx0:wx1]
        removed = inside * tf.cast(union, masks.dtype)[None]
        removed_pixels = tf.reduce_sum(tf.cast(removed, tf.float32), axis=[1, 2])
        cut = _put(masks, inside - removed, wy0, wx0, axis=1)
        # New boxes and pixel counts for the touched instances only.
        touched = tf.where(removed_pixels > 0)[:, 0]
        touched_boxes, touched_pixels = ops.mask_statistics(tf.gather(cut, touched))
        new_boxes = tf.tensor_scatter_nd_update(boxes, touched[:, None], touched_boxes)
        keep = tf.tensor_scatter_nd_update(
            tf.ones([num], tf.bool), touched[:, None], touched_pixels >= params.min_instance_pixels
        )
        # The pasted instances' boxes, from the window to the image.
        window_boxes, pasted_pixels = ops.mask_statistics(pasted_cut)
        scale_box = tf.cast(tf.stack([wh, ww, wh, ww]), tf.float32)
        shift_box = tf.cast(tf.stack([wy0, wx0, wy0, wx0]), tf.float32)
        pasted_boxes = (window_boxes * scale_box + shift_box) / tf.stack([hf, wf, hf, wf])
        full_pasted = tf.pad(tf.cast(pasted_cut, masks.dtype), [[0, 0], [wy0, height - wy1], [wx0, width - wx1]])

        out_extras = {}
        for key, value in extras.items():
            fill = tf.zeros(tf.concat([[n], tf.shape(value)[1:]], axis=0), value.dtype)
            out_extras[key] = tf.concat([value, fill], axis=0)
        if ops.AREA_KEY in extras:
            area = extras[ops.AREA_KEY]
            before = touched_pixels + tf.gather(removed_pixels, touched)
            ratio = tf.where(before > 0, touched_pixels / tf.maximum(before, 1.0), tf.ones_like(before))
            area = tf.tensor_scatter_nd_update(
                area, touched[:, None], tf.gather(area, touched) * tf.cast(ratio, area.dtype)
            )
            out_extras[ops.AREA_KEY] = tf.concat([area, tf.cast(pasted_pixels, area.dtype)], axis=0)
        out_extras[PASTED_KEY] = tf.concat([tf.zeros([num], tf.bool), tf.ones([n], tf.bool)], axis=0)
        sample = {
            "image": new_image,
            "boxes": tf.concat([new_boxes, pasted_boxes], axis=0),
            "masks": tf.concat([cut, full_pasted], axis=0),
            "classes": tf.concat([classes, tf.cast(pasted_classes[:n], classes.dtype)], axis=0),
            "extras": out_extras,
        }
        keep = tf.concat([keep, pasted_pixels >= params.min_instance_pixels], axis=0)
        sample = ops._cond_sample(  # pylint: disable=protected-access
            tf.reduce_all(keep),
            lambda: sample,
            sample,
            false_fn=lambda: ops._gather_instances(sample, tf.where(keep)[:, 0]),  # pylint: disable=protected-access
        )
        if not return_layers:
            return sample
        coverage, layer, top = (
            tf.zeros(tf.stack([wh, ww])),
            tf.zeros(tf.stack([wh, ww, 3])),
            tf.zeros(tf.stack([wh, ww])),
        )
        for i, (alpha, obj) in enumerate(zip(alphas, objects)):  # "over" compositing in paste order
            layer = layer * (1.0 - alpha[..., None]) + obj * alpha[..., None]
            coverage = coverage + alpha * (1.0 - coverage)
            visible = alpha
            for later_alpha in alphas[i + 1 :]:
                visible = visible * (1.0 - later_alpha)
            top = tf.maximum(top, visible)
        place = lambda x, extra=(): tf.pad(x, [[wy0, height - wy1], [wx0, width - wx1]] + list(extra))  # noqa: E731
        return sample, {"alpha": place(coverage), "layer": place(layer, [[0, 0]]), "top": place(top)}

    if return_layers:
        sample, layers = tf.cond(n > 0, apply, lambda: (unchanged(), no_layers()))
    else:
        sample = tf.cond(n > 0, apply, unchanged)
    result = (sample["image"], sample["boxes"], sample["masks"], sample["classes"], sample["extras"])
    return (result, dict(layers, num_pasted=n)) if return_layers else result


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
