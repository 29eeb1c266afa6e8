"""In-graph augmentation that keeps image, boxes and instance masks aligned.

Model Garden's Mask R-CNN parser can only flip and scale-jitter; its RandAugment /
AutoAugment policies touch the image alone, so any geometric op there misaligns the
masks. The ops here move the image and every instance mask with the same transform:

* flips and 90-degree rotations move boxes exactly;
* scale jitter + crop, rotation, shear and translation are composed into ONE affine
  matrix and applied with `ImageProjectiveTransformV3` (bilinear for the image, nearest
  for the masks), then every box is recomputed as the tight box of its warped mask;
  translations are in whole pixels, and a translation alone is done by copying;
* cutout blanks the image and the masks in the same rectangles and recomputes the
  boxes of the instances it touched;
* colour ops (brightness, contrast, saturation, hue, grayscale, blur, noise) change
  the image only; the first five are affine in the pixel value and are applied as one
  3x3 colour matrix. They live in `augment_colour` and are re-exported here.

Speed matters because this runs on the input pipeline's CPU for every training image
(docs/benchmarks.md): flips use the ReverseV2 kernel (not a negative-stride slice, which
TF runs element by element); the image is warped as uint8 and converted to float once;
a translation by itself (whole pixels) is a copy, not a resampling; masks are warped
bit-packed; the box, pixel count and area bookkeeping share one pass over the warped
masks; and the training parser takes the image as float in [0, 1] (`unit_float_image`)
rather than rounded back to uint8.

Instances that become empty or tiny are dropped together with their class, box and
every per-instance extra (is_crowd, area, ...), so nothing comes apart. Crowd instances
are transformed exactly like the others.

Conventions follow Model Garden's `TfExampleDecoder`: image uint8 (or float in
[0, 255]) [H, W, 3]; boxes float [N, 4] normalized (ymin, xmin, ymax, xmax); masks
float [N, H, W] with values 0/1 (or None); classes [N]; extras a dict of [N, ...]
tensors. The output has the same dtypes; H and W change only under rot90.

Determinism: every op draws its randomness with stateless ops from the seed (one
`stateless_uniform` vector with a fixed slot per op for the scalar draws, and
`stateless_fold_in(seed, op_index)` for the rest; see `augment_draws`), so the output is a pure
function of the inputs and the seed [2] (same seed -> same output, in eager mode, in a
`tf.function` and inside `tf.data` map with any parallelism). Where the per-element
seed comes from is decided by the caller (see `augment_presets.build_augmenter`).
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import tensorflow as tf

# Re-exported: the colour ops are part of this module's public API.
from tfmaskrcnn.augment.colour import (  # noqa: F401
    cast_like,
    clip_cast_like,
    colour_matrix,
    gaussian_blur,
    random_colour,
    random_colour_float,
)
from tfmaskrcnn.augment.draws import (
    OP_CUTOUT,
    OP_HFLIP,
    OP_ROT90,
    OP_ROTATE,
    OP_SCALE,
    OP_SHEAR,
    OP_TRANSLATE,
    OP_VFLIP,
    Draws,
    draw_many,
    happens,
    op_seed,
    uniform,
)
from tfmaskrcnn.augment.params import AugmentationParams  # noqa: F401  (re-exported)

# Per-instance extra whose value is an area in pixels; rescaled by the ratio of mask
# pixels after / before a warp so it keeps describing the instance.
AREA_KEY = "area"

# Instances bit-packed into one float32-exact integer channel for the mask warp.
_MASK_BITS = 24


# ----------------------------------------------------------------------------- helpers


def _gather_instances(sample: dict, indices: tf.Tensor) -> dict:
    out = dict(sample)
    out["boxes"] = tf.gather(sample["boxes"], indices)
    out["classes"] = tf.gather(sample["classes"], indices)
    if sample["masks"] is not None:
        out["masks"] = tf.gather(sample["masks"], indices)
    out["extras"] = {k: tf.gather(v, indices) for k, v in sample["extras"].items()}
    return out


def mask_statistics(masks: tf.Tensor):
    """(tight normalized boxes [N, 4], pixel counts [N]) of 0/1 masks [N, H, W].

    Two passes over the masks (row sums and column sums) give both: the boxes from
    which rows / columns are non-empty, the pixel counts from the row sums. Boxes have
    pixel-edge coordinates and are zeros where a mask is empty.
    """
    shape = tf.shape(masks)
    height, width = shape[1], shape[2]
    masks = tf.cast(masks, tf.float32)
    row_sums = tf.reduce_sum(masks, axis=2)  # [N, H]
    rows = row_sums > 0.5
    cols = tf.reduce_sum(masks, axis=1) > 0.5  # [N, W]
    ymin = tf.argmax(tf.cast(rows, tf.int32), axis=1, output_type=tf.int32)
    ymax = height - tf.argmax(tf.cast(rows[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
    xmin = tf.argmax(tf.cast(cols, tf.int32), axis=1, output_type=tf.int32)
    xmax = width - tf.argmax(tf.cast(cols[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    boxes = tf.stack(
        [
            tf.cast(ymin, tf.float32) / hf,
            tf.cast(xmin, tf.float32) / wf,
            tf.cast(ymax, tf.float32) / hf,
            tf.cast(xmax, tf.float32) / wf,
        ],
        axis=1,
    )
    boxes = tf.where(tf.reduce_any(rows, axis=1)[:, None], boxes, tf.zeros_like(boxes))
    return boxes, tf.reduce_sum(row_sums, axis=1)


def masks_to_boxes(masks: tf.Tensor) -> tf.Tensor:
    """Tight normalized boxes [N, 4] (pixel edges) of 0/1 masks [N, H, W]; zeros where empty."""
    return mask_statistics(masks)[0]


def drop_small_instances(
    sample: dict, min_pixels: int, min_box_side: float, mask_pixels: Optional[tf.Tensor] = None
) -> dict:
    """Drops instances whose mask has < min_pixels pixels or whose box side < min_box_side px.

    `mask_pixels` [N], when the caller already has it (see `mask_statistics`), saves a
    pass over the masks.
    """
    image_hw = tf.cast(tf.shape(sample["image"])[:2], tf.float32)
    boxes = sample["boxes"]
    side_h = (boxes[:, 2] - boxes[:, 0]) * image_hw[0]
    side_w = (boxes[:, 3] - boxes[:, 1]) * image_hw[1]
    keep = tf.logical_and(side_h >= min_box_side, side_w >= min_box_side)
    keep = tf.logical_and(keep, tf.logical_and(side_h > 0, side_w > 0))
    if sample["masks"] is not None:
        if mask_pixels is None:
            mask_pixels = tf.reduce_sum(tf.cast(sample["masks"], tf.float32), axis=[1, 2])  # masks are 0/1
        keep = tf.logical_and(keep, mask_pixels >= max(int(min_pixels), 1))
    indices = tf.where(keep)[:, 0]
    # Gathering copies every mask; skip it in the common case where nothing is dropped.
    return _cond_sample(
        tf.reduce_all(keep), lambda: dict(sample), sample, false_fn=lambda: _gather_instances(sample, indices)
    )


# -------------------------------------------------------------------------- geometric


def _reverse(values: tf.Tensor, axis: int) -> tf.Tensor:
    """`values` reversed along `axis`, with the ReverseV2 kernel.

    Not a `[::-1]` strided slice: TF runs a negative-stride slice element by element,
    about 15x slower on an image and on a stack of masks alike (Model Garden's own
    mask flip is one; docs/benchmarks.md).
    """
    return tf.reverse(values, [axis])


def flip_left_right(sample: dict) -> dict:
    out = dict(sample)
    out["image"] = _reverse(sample["image"], 1)
    if sample.get("masks") is not None:
        out["masks"] = _reverse(sample["masks"], 2)
    ymin, xmin, ymax, xmax = tf.unstack(sample["boxes"], axis=1)
    out["boxes"] = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)
    return out


def flip_up_down(sample: dict) -> dict:
    out = dict(sample)
    out["image"] = _reverse(sample["image"], 0)
    if sample.get("masks") is not None:
        out["masks"] = _reverse(sample["masks"], 1)
    ymin, xmin, ymax, xmax = tf.unstack(sample["boxes"], axis=1)
    out["boxes"] = tf.stack([1.0 - ymax, xmin, 1.0 - ymin, xmax], axis=1)
    return out


def rotate90(sample: dict, k: tf.Tensor) -> dict:
    """Rotates by k quarter turns counter-clockwise (as tf.image.rot90); H and W swap for odd k."""
    k = tf.math.floormod(tf.cast(k, tf.int32), 4)
    out = dict(sample)
    out["image"] = tf.image.rot90(sample["image"], k)
    if sample["masks"] is not None:
        out["masks"] = tf.image.rot90(sample["masks"][..., None], k)[..., 0]

    def quarter(b):  # one counter-clockwise turn: (y, x) -> (1 - x, y)
        return tf.stack([1.0 - b[:, 3], b[:, 0], 1.0 - b[:, 1], b[:, 2]], axis=1)

    boxes = sample["boxes"]
    out["boxes"] = tf.switch_case(
        k,
        [
            lambda: boxes,
            lambda: quarter(boxes),
            lambda: quarter(quarter(boxes)),
            lambda: quarter(quarter(quarter(boxes))),
        ],
    )
    return out


def affine_matrix(
    height, width, scale=1.0, angle_deg=0.0, shear_x_deg=0.0, shear_y_deg=0.0, translate_y=0.0, translate_x=0.0
) -> tf.Tensor:
    """Forward 3x3 matrix (input pixel (x, y, 1) -> output pixel) about the image centre.

    Rotation is counter-clockwise on screen for positive angles; translations in pixels.
    """
    f = lambda v: tf.cast(v, tf.float32)  # noqa: E731
    centre = tf.stack([(f(width) - 1.0) / 2.0, (f(height) - 1.0) / 2.0])  # (x, y)
    a = f(angle_deg) * (math.pi / 180.0)
    cos, sin = tf.cos(a), tf.sin(a)
    tx, ty = tf.tan(f(shear_x_deg) * (math.pi / 180.0)), tf.tan(f(shear_y_deg) * (math.pi / 180.0))
    # linear part: scale * rotation @ shear; screen y points down, so a counter-clockwise
    # rotation is [[cos, sin], [-sin, cos]] in (x, y).
    linear = f(scale) * tf.reshape(tf.stack([cos + sin * ty, cos * tx + sin, cos * ty - sin, cos - sin * tx]), [2, 2])
    # about the centre, then moved: x' = L (x - c) + c + t
    shift = centre + tf.stack([f(translate_x), f(translate_y)]) - tf.linalg.matvec(linear, centre)
    return tf.concat([tf.concat([linear, shift[:, None]], axis=1), tf.constant([[0.0, 0.0, 1.0]])], axis=0)


def _warp(images: tf.Tensor, inverse: tf.Tensor, interpolation: str, fill_value: float) -> tf.Tensor:
    """images [B, H, W, C] (float32, uint8, or int32 with NEAREST); inverse maps output to input pixels.

    With uint8 the kernel truncates the interpolated value (a half grey level darker on
    average) but runs about 25% faster than on float32.
    """
    flat = tf.reshape(inverse, [9])
    transform = (flat[:8] / flat[8])[None, :]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transform,
        output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )


def warp_masks(masks: tf.Tensor, inverse: tf.Tensor) -> tf.Tensor:
    """Nearest-neighbour warp of 0/1 masks [N, H, W], bit-packed 24 instances per channel.

    Nearest interpolation copies values without blending, so bit-packed masks survive
    the warp exactly. Packing is one matrix product (float32 holds integers below 2**24
    exactly), the warp computes each source coordinate once per 24 instances, and
    unpacking is one broadcast AND per instance: several times faster than warping each
    mask as its own image. Mask values must be exactly 0 or 1 (as the decoder gives).
    """
    shape = tf.shape(masks)
    n, height, width = shape[0], shape[1], shape[2]
    per_word = tf.clip_by_value(n, 1, _MASK_BITS)  # instances per packed word; 24 unless fewer
    groups = (n + per_word - 1) // per_word
    index = tf.range(n)
    word, bit = index // per_word, index % per_word
    # [G, N] weights 2**bit on the instance's own word.
    weights = tf.one_hot(word, groups, dtype=tf.float32, axis=0) * tf.pow(2.0, tf.cast(bit, tf.float32))[None]
    flat = tf.reshape(tf.cast(masks, tf.float32), [n, height * width])
    words = tf.cast(tf.matmul(weights, flat), tf.int32)  # [G, H*W]

    def warp_and_unpack():
        planes = tf.transpose(tf.reshape(words, [groups, height, width]), [1, 2, 0])[None]
        warped = tf.transpose(tf.reshape(_warp(planes, inverse, "NEAREST", 0.0)[0], [height * width, groups]))
        bits = tf.range(per_word)
        # [G, 1, HW] AND [1, B, 1] -> [G, B, HW]; bit b of a word is 0 or 2**b. Testing it
        # against 0 and casting the bool is one pass less than scaling 2**b down to 1.
        on = tf.bitwise.bitwise_and(warped[:, None, :], tf.bitwise.left_shift(1, bits)[None, :, None])
        return tf.reshape(tf.cast(on > 0, tf.float32), [groups * per_word, height * width])[:n]

    unpacked = tf.cond(n > 0, warp_and_unpack, lambda: tf.zeros([0, height * width], tf.float32))
    return tf.cast(tf.reshape(unpacked, [n, height, width]), masks.dtype)


def _transform_box_corners(boxes, matrix, height, width):
    """Envelope of the 4 warped corners of each box (used only when there are no masks)."""
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    # Box edges in pixel-centre coordinates: an edge at e (normalized) is at e*W - 0.5.
    xs = tf.stack([xmin, xmax, xmin, xmax], axis=1) * wf - 0.5
    ys = tf.stack([ymin, ymin, ymax, ymax], axis=1) * hf - 0.5
    pts = tf.stack([xs, ys, tf.ones_like(xs)], axis=-1)  # [N, 4, 3]
    moved = tf.einsum("ij,nkj->nki", matrix, pts)
    mx = (moved[..., 0] / moved[..., 2] + 0.5) / wf
    my = (moved[..., 1] / moved[..., 2] + 0.5) / hf
    out = tf.stack([tf.reduce_min(my, 1), tf.reduce_min(mx, 1), tf.reduce_max(my, 1), tf.reduce_max(mx, 1)], 1)
    return tf.clip_by_value(out, 0.0, 1.0)


def warp_affine(sample: dict, matrix: tf.Tensor, fill_value: float = 0.0) -> dict:
    """Applies one forward affine `matrix` to image and masks; boxes become the masks' tight boxes."""
    return _warp_affine_counting(sample, matrix, fill_value)[0]


def _warp_affine_counting(sample: dict, matrix: tf.Tensor, fill_value: float):
    """`warp_affine`, plus the warped masks' pixel counts [N] (None without masks)."""
    inverse = tf.linalg.inv(matrix)

    def warp_image(image):
        if image.dtype == tf.uint8:  # warps faster than float32 (see `_warp`)
            return _warp(image[None], inverse, "BILINEAR", fill_value)[0]
        return cast_like(_warp(tf.cast(image, tf.float32)[None], inverse, "BILINEAR", fill_value)[0], image)

    return _move_counting(sample, matrix, warp_image, lambda masks: warp_masks(masks, inverse))


def _move_counting(sample: dict, matrix: tf.Tensor, move_image, move_masks):
    """Moves the image and masks with `move_image` / `move_masks`, which both realize the
    forward affine `matrix`, and keeps the boxes and the area extra with them.

    Boxes become the tight boxes of the moved masks; without masks, the envelope of the
    moved box corners (and the area scales by the matrix's determinant). Returns the new
    sample and the moved masks' pixel counts [N] (None without masks).
    """
    image = sample["image"]
    shape = tf.shape(image)
    out = dict(sample)
    out["image"] = move_image(image)
    if sample["masks"] is None:
        out["boxes"] = _transform_box_corners(sample["boxes"], matrix, shape[0], shape[1])
        if AREA_KEY in sample["extras"]:
            det = tf.abs(tf.linalg.det(matrix[:2, :2]))
            extras = dict(sample["extras"])
            extras[AREA_KEY] = sample["extras"][AREA_KEY] * tf.cast(det, sample["extras"][AREA_KEY].dtype)
            out["extras"] = extras
        return out, None
    masks = sample["masks"]
    out["masks"] = move_masks(masks)
    out["boxes"], pixels = mask_statistics(out["masks"])
    out["extras"] = _rescale_area(sample["extras"], masks, pixels)
    return out, pixels


def shift_spatial(values: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, axis: int, fill_value) -> tf.Tensor:
    """Moves `values` by whole pixels (dy down, dx right) along axes (axis, axis + 1).

    What a warp by a pure whole-pixel translation gives, by copying instead of
    resampling: the part that stays inside is sliced out and padded with `fill_value`.
    """
    shape = tf.shape(values)
    height, width = shape[axis], shape[axis + 1]
    dy = tf.clip_by_value(tf.cast(dy, tf.int32), -height, height)
    dx = tf.clip_by_value(tf.cast(dx, tf.int32), -width, width)
    rank = len(values.shape)
    begin = tf.tensor_scatter_nd_update(
        tf.zeros([rank], tf.int32), [[axis], [axis + 1]], tf.stack([tf.maximum(-dy, 0), tf.maximum(-dx, 0)])
    )
    size = tf.tensor_scatter_nd_update(shape, [[axis], [axis + 1]], tf.stack([height - tf.abs(dy), width - tf.abs(dx)]))
    paddings = tf.tensor_scatter_nd_update(
        tf.zeros([rank, 2], tf.int32),
        [[axis], [axis + 1]],
        tf.stack(
            [tf.stack([tf.maximum(dy, 0), tf.maximum(-dy, 0)]), tf.stack([tf.maximum(dx, 0), tf.maximum(-dx, 0)])]
        ),
    )
    return tf.pad(tf.slice(values, begin, size), paddings, constant_values=tf.cast(fill_value, values.dtype))


def _shift_counting(sample: dict, matrix: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, fill_value: float):
    """`_warp_affine_counting` for a `matrix` that is a whole-pixel translation by (dy down,
    dx right), done by copying instead of resampling."""
    return _move_counting(
        sample,
        matrix,
        lambda image: shift_spatial(image, dy, dx, 0, fill_value),
        lambda masks: shift_spatial(masks, dy, dx, 1, 0.0),
    )


def _rescale_area(extras, old_masks, new_pixels):
    """Scales the area extra by mask pixels after / before (new_pixels [N] already counted)."""
    if AREA_KEY not in extras:
        return extras
    before = tf.reduce_sum(tf.reshape(tf.cast(old_masks, tf.float32), [tf.shape(old_masks)[0], -1]), axis=1)
    after = new_pixels
    area = extras[AREA_KEY]
    ratio = tf.where(before > 0, after / tf.maximum(before, 1.0), tf.ones_like(before))
    out = dict(extras)
    out[AREA_KEY] = area * tf.cast(ratio, area.dtype)
    return out


def random_affine(sample: dict, seed: tf.Tensor, p: AugmentationParams) -> dict:
    """Scale jitter + crop, rotation, shear and translation composed into one warp."""
    shape = tf.shape(sample["image"])
    hf, wf = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)

    # Switched-off ops cost no graph ops: at small image sizes the scalar ops around a
    # warp are a visible share of the time.
    scale, crop_ty, crop_tx = tf.constant(1.0), tf.constant(0.0), tf.constant(0.0)
    if p.scale_prob > 0 and not p.scale_min == p.scale_max == 1.0:
        log_scale = uniform(seed, OP_SCALE, 1, math.log(p.scale_min), math.log(p.scale_max))
        scale = tf.exp(tf.where(happens(seed, OP_SCALE, p.scale_prob), log_scale, 0.0))
        # Crop window (zoom in) or paste position (zoom out) drawn so no image content is
        # pushed out needlessly and no border is pulled in when zooming in.
        slack = tf.abs(scale - 1.0) / 2.0
        crop_ty = uniform(seed, OP_SCALE, 2, -1.0, 1.0) * slack * hf
        crop_tx = uniform(seed, OP_SCALE, 3, -1.0, 1.0) * slack * wf
    r, sh, t = p.rotate_max_degrees, p.shear_max_degrees, p.translate_max_fraction
    angle, shear_x, shear_y, move_y, move_x = tf.unstack(
        draw_many(
            seed,
            [OP_ROTATE, OP_SHEAR, OP_SHEAR, OP_TRANSLATE, OP_TRANSLATE],
            [p.rotate_prob, p.shear_prob, p.shear_prob, p.translate_prob, p.translate_prob],
            [-r, -sh, -sh, -t, -t],
            [r, sh, sh, t, t],
            [0.0] * 5,
            salts=[1, 1, 2, 1, 2],
        )
    )
    # Whole pixels: a sub-pixel move adds no variety, and a whole-pixel move alone is
    # done by copying (`shift`) instead of resampling, several times faster.
    move_y, move_x = tf.round(move_y * hf), tf.round(move_x * wf)
    matrix = affine_matrix(shape[0], shape[1], scale, angle, shear_x, shear_y, crop_ty + move_y, crop_tx + move_x)
    changed = tf.reduce_any(tf.not_equal(matrix, tf.eye(3)))
    only_moved = tf.reduce_all(tf.equal(tf.stack([scale, angle, shear_x, shear_y]), [1.0, 0.0, 0.0, 0.0]))

    def drop_small(warped_and_pixels):
        warped, pixels = warped_and_pixels
        return drop_small_instances(warped, p.min_instance_pixels, p.min_box_side, pixels)

    def apply():
        return _cond_sample(
            only_moved,
            lambda: drop_small(_shift_counting(sample, matrix, move_y, move_x, p.fill_value)),
            sample,
            false_fn=lambda: drop_small(_warp_affine_counting(sample, matrix, p.fill_value)),
        )

    return _cond_sample(changed, apply, sample)


def random_cutout(sample: dict, seed: tf.Tensor, p: AugmentationParams) -> dict:
    """Blanks `cutout_count` random rectangles in the image AND the masks."""
    shape = tf.shape(sample["image"])
    hf, wf = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ys = tf.range(hf)[:, None]
    xs = tf.range(wf)[None, :]
    keep = tf.ones(shape[:2], tf.bool)
    for i in range(int(p.cutout_count)):
        side_h = uniform(seed, OP_CUTOUT, 10 * i + 1, 0.0, p.cutout_max_fraction) * hf
        side_w = uniform(seed, OP_CUTOUT, 10 * i + 2, 0.0, p.cutout_max_fraction) * wf
        top = uniform(seed, OP_CUTOUT, 10 * i + 3) * (hf - side_h)
        left = uniform(seed, OP_CUTOUT, 10 * i + 4) * (wf - side_w)
        inside = (
            (ys >= tf.round(top))
            & (ys < tf.round(top + side_h))
            & (xs >= tf.round(left))
            & (xs < tf.round(left + side_w))
        )
        keep = keep & ~inside

    def apply():
        out = dict(sample)
        image = sample["image"]
        fill = tf.cast(p.fill_value, image.dtype)
        out["image"] = tf.where(keep[..., None], image, fill)
        if sample["masks"] is not None:
            masks = sample["masks"]
            new_masks = masks * tf.cast(keep, masks.dtype)[None]
            # Only boxes of touched instances are recomputed, so untouched ones keep
            # the annotator's box exactly.
            touched = tf.reduce_any(tf.not_equal(new_masks, masks), axis=[1, 2])
            new_boxes, pixels = mask_statistics(new_masks)
            out["boxes"] = tf.where(touched[:, None], new_boxes, sample["boxes"])
            out["masks"] = new_masks
            out["extras"] = _rescale_area(sample["extras"], masks, pixels)
            out = drop_small_instances(out, p.min_instance_pixels, p.min_box_side, pixels)
        return out

    return _cond_sample(happens(seed, OP_CUTOUT, p.cutout_prob), apply, sample)


# ------------------------------------------------------------------------------- entry


def to_unit_float(image: tf.Tensor) -> tf.Tensor:
    """An image in [0, 255] (uint8, or float that the ops may have pushed out of range)
    as float32 in [0, 1]."""
    if image.dtype.is_integer:
        return tf.image.convert_image_dtype(image, tf.float32)
    return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0) * (1.0 / 255.0)


def _cond_sample(pred, true_fn, sample, false_fn=None):
    """tf.cond over sample dicts whose masks may be None (None is not a tensor).

    The false branch returns `sample` unchanged, or `false_fn()` when given.
    """
    false_fn = false_fn or (lambda: dict(sample))
    strip = lambda s: {k: v for k, v in s.items() if k != "masks"}  # noqa: E731
    if sample["masks"] is None:
        out = tf.cond(pred, lambda: strip(true_fn()), lambda: strip(false_fn()))
        out["masks"] = None
        return out
    return tf.cond(pred, true_fn, false_fn)


def augment(
    image: tf.Tensor,
    boxes: tf.Tensor,
    masks: Optional[tf.Tensor],
    classes: tf.Tensor,
    extras: Optional[Dict[str, tf.Tensor]],
    seed: tf.Tensor,
    params: AugmentationParams,
    unit_float_image: bool = False,
):
    """Augments one example; returns (image, boxes, masks, classes, extras).

    `seed` is an int [2] tensor; the result is a pure function of the inputs and it.
    With `unit_float_image` the image comes back as float32 in [0, 1] instead of the
    input's dtype: the form Model Garden's `normalize_image` takes as it is, so an image
    the ops made float is not rounded back to uint8 only to be converted again there.
    """
    seed = Draws(tf.cast(tf.convert_to_tensor(seed), tf.int64))
    sample = {
        "image": tf.convert_to_tensor(image),
        "boxes": tf.cast(boxes, tf.float32),
        "masks": None if masks is None else tf.convert_to_tensor(masks),
        "classes": tf.convert_to_tensor(classes),
        "extras": {k: tf.convert_to_tensor(v) for k, v in (extras or {}).items()},
    }
    if params.hflip_prob > 0:
        sample = _cond_sample(happens(seed, OP_HFLIP, params.hflip_prob), lambda: flip_left_right(sample), sample)
    if params.vflip_prob > 0:
        sample = _cond_sample(happens(seed, OP_VFLIP, params.vflip_prob), lambda: flip_up_down(sample), sample)
    if params.rot90_prob > 0:
        k = tf.where(
            happens(seed, OP_ROT90, params.rot90_prob),
            tf.random.stateless_uniform([], op_seed(op_seed(seed, OP_ROT90), 1), 1, 4, tf.int32),
            0,
        )
        sample = rotate90(sample, k)
    warps = max(params.scale_prob, params.rotate_prob, params.shear_prob, params.translate_prob) > 0
    cuts = params.cutout_prob > 0 and params.cutout_max_fraction > 0
    colours = (
        max(
            params.brightness_prob,
            params.contrast_prob,
            params.saturation_prob,
            params.hue_prob,
            params.grayscale_prob,
            params.blur_prob,
            params.noise_prob,
        )
        > 0
    )
    # The warp runs on the image as it comes (uint8 warps faster than float); cutout
    # and the colour ops compute in float: convert once here and once at the end
    # instead of around every op (each conversion is a pass over the image).
    original_image = sample["image"]
    if warps:
        sample = random_affine(sample, seed, params)
    if warps or cuts or colours:
        sample["image"] = tf.cast(sample["image"], tf.float32)
    if cuts:
        sample = random_cutout(sample, seed, params)
    if colours:
        sample["image"] = random_colour_float(sample["image"], seed, params)
    if unit_float_image:
        sample["image"] = to_unit_float(sample["image"])
    elif warps or cuts or colours:
        sample["image"] = clip_cast_like(sample["image"], original_image)
    return sample["image"], sample["boxes"], sample["masks"], sample["classes"], sample["extras"]
