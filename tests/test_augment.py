"""Property tests: augmentation keeps image, masks, boxes, classes and extras together."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmaskrcnn.augment import ops as augment
from tfmaskrcnn.augment import presets as augment_presets

# Each class paints its instances in its own colour, so after any geometric op the image
# under an instance's mask tells which class the mask belongs to: a mix-up of masks,
# classes or image is detectable.
CLASS_COLOURS = {1: (230, 30, 30), 2: (30, 230, 30), 3: (30, 30, 230), 4: (230, 230, 30), 5: (30, 230, 230)}
BACKGROUND = 90

GEOMETRIC_OPS = {
    "hflip": dict(hflip_prob=1.0),
    "vflip": dict(vflip_prob=1.0),
    "rot90": dict(rot90_prob=1.0),
    "scale": dict(scale_prob=1.0, scale_min=0.5, scale_max=2.0),
    "rotate": dict(rotate_prob=1.0, rotate_max_degrees=40.0),
    "shear": dict(shear_prob=1.0, shear_max_degrees=20.0),
    "translate": dict(translate_prob=1.0, translate_max_fraction=0.4),
    "cutout": dict(cutout_prob=1.0, cutout_count=3, cutout_max_fraction=0.5),
    "all": dict(
        hflip_prob=0.5,
        vflip_prob=0.5,
        rot90_prob=0.5,
        scale_prob=0.8,
        scale_min=0.5,
        scale_max=2.0,
        rotate_prob=0.8,
        rotate_max_degrees=30.0,
        shear_prob=0.5,
        shear_max_degrees=10.0,
        translate_prob=0.5,
        translate_max_fraction=0.2,
        cutout_prob=0.5,
        cutout_max_fraction=0.3,
    ),
}
EXACT_OPS = {"hflip", "vflip", "rot90"}  # never drop an instance
# The other ops may push an instance out or cut it below min_instance_pixels, but most must
# survive: over the 50 examples below 52 of 60 (translate) to 62 of 64 (all) do, 87-100%.
MIN_SURVIVING_SHARE = 0.8


def make_example(rng: np.random.Generator):
    """Random-size image with 0-4 non-overlapping instances (rectangles or ellipses)."""
    height, width = int(rng.integers(32, 80)), int(rng.integers(32, 80))
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    masks, classes = [], []
    occupied = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(0, 5))):
        h, w = int(rng.integers(6, height // 2)), int(rng.integers(6, width // 2))
        top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        mask = np.zeros((height, width), bool)
        if rng.random() < 0.5:
            mask[top : top + h, left : left + w] = True
        else:
            yy, xx = np.mgrid[:height, :width]
            cy, cx = top + (h - 1) / 2, left + (w - 1) / 2
            mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
        # A one-pixel gap keeps instances apart, so colours do not bleed across them.
        grown = np.zeros_like(mask)
        grown[max(top - 2, 0) : top + h + 2, max(left - 2, 0) : left + w + 2] = True
        if (grown & occupied).any():
            continue
        occupied |= grown
        cls = int(rng.integers(1, 6))
        image[mask] = CLASS_COLOURS[cls]
        masks.append(mask.astype(np.float32))
        classes.append(cls)
    masks = np.stack(masks) if masks else np.zeros((0, height, width), np.float32)
    boxes = tight_boxes(masks)
    tags = np.array([100 * c + i for i, c in enumerate(classes)], np.int64)
    extras = {"tag": tags, "is_crowd": tags % 2 == 0, "area": masks.sum(axis=(1, 2)).astype(np.float32)}
    return image, boxes, masks, np.array(classes, np.int64), extras


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m > 0.5)
        if len(ys):
            out[i] = [
                ys.min() / m.shape[0],
                xs.min() / m.shape[1],
                (ys.max() + 1) / m.shape[0],
                (xs.max() + 1) / m.shape[1],
            ]
    return out


SIGNATURE = [
    tf.TensorSpec([None, None, 3], tf.uint8),
    tf.TensorSpec([None, 4], tf.float32),
    tf.TensorSpec([None, None, None], tf.float32),
    tf.TensorSpec([None], tf.int64),
    {
        "tag": tf.TensorSpec([None], tf.int64),
        "is_crowd": tf.TensorSpec([None], tf.bool),
        "area": tf.TensorSpec([None], tf.float32),
    },
    tf.TensorSpec([2], tf.int64),
]


def compiled(params: augment.AugmentationParams):
    return tf.function(lambda *a: augment.augment(*a[:5], a[5], params), input_signature=SIGNATURE)


def interior(mask: np.ndarray) -> np.ndarray:
    """Mask pixels whose 3x3 neighbourhood is inside the mask (away from blended edges)."""
    padded = np.pad(mask > 0.5, 1)
    out = np.ones_like(mask, bool)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


@pytest.mark.parametrize("op", sorted(GEOMETRIC_OPS))
def test_geometric_op_keeps_everything_aligned(op):
    params = augment.AugmentationParams(min_instance_pixels=4, min_box_side=1.0, **GEOMETRIC_OPS[op])
    fn = compiled(params)
    rng = np.random.default_rng(sum(map(ord, op)))
    instances_in = instances_out = 0
    for seed in range(50):
        image, boxes, masks, classes, extras = make_example(rng)
        out_image, out_boxes, out_masks, out_classes, out_extras = tf.nest.map_structure(
            lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [seed, 7])
        )
        n = len(out_classes)
        instances_in, instances_out = instances_in + len(classes), instances_out + n
        assert out_boxes.shape == (n, 4) and out_masks.shape == (n,) + out_image.shape[:2]
        assert out_image.dtype == np.uint8 and np.isfinite(out_boxes).all() and np.isfinite(out_masks).all()
        assert set(np.unique(out_masks)) <= {0.0, 1.0}
        if op in EXACT_OPS:
            assert n == len(classes)
        assert out_extras["area"].shape == (n,)
        assert_instances_aligned(
            extras, out_image, out_boxes, out_masks, out_classes, out_extras, where=f"op {op} seed {seed}"
        )
    # An op that dropped every instance would pass the checks above on nothing.
    assert instances_in >= 50
    assert instances_out >= MIN_SURVIVING_SHARE * instances_in, f"op {op}: {instances_out} of {instances_in} survive"


def assert_instances_aligned(extras, out_image, out_boxes, out_masks, out_classes, out_extras, where=""):
    """What any mask-consistent augmenter must keep, checked on one augmented example."""
    n = len(out_classes)
    # Box = tight box of the warped mask within 1 px; no empty or tiny instance survives.
    h, w = out_image.shape[:2]
    np.testing.assert_allclose(out_boxes * [h, w, h, w], tight_boxes(out_masks) * [h, w, h, w], atol=1.0)
    assert (out_masks.sum(axis=(1, 2)) >= 4).all()
    # Extras travel with their instance: tags are a subset, unique, in the same order.
    tags = out_extras["tag"]
    assert set(tags) <= set(extras["tag"]) and len(set(tags)) == n
    np.testing.assert_array_equal(tags // 100, out_classes)
    np.testing.assert_array_equal(out_extras["is_crowd"], tags % 2 == 0)
    # The image under each mask still shows that mask's class colour.
    for mask, cls in zip(out_masks, out_classes):
        inside = interior(mask)
        if inside.sum() >= 3:
            colour = np.median(out_image[inside].astype(float), axis=0)
            np.testing.assert_allclose(
                colour, CLASS_COLOURS[cls], atol=40, err_msg=f"{where}: mask of class {cls} not on its pixels"
            )


def test_affine_moves_mask_with_image_and_drops_instances_pushed_out():
    image = np.full((40, 40, 3), BACKGROUND, np.uint8)
    masks = np.zeros((2, 40, 40), np.float32)
    masks[0, 2:8, 2:8] = 1  # near the corner: leaves the frame when zooming in 2x
    masks[1, 17:23, 17:23] = 1  # centre: stays, twice as large
    image[masks[0] > 0] = CLASS_COLOURS[1]
    image[masks[1] > 0] = CLASS_COLOURS[2]
    sample = {
        "image": tf.constant(image),
        "boxes": tf.constant(tight_boxes(masks)),
        "masks": tf.constant(masks),
        "classes": tf.constant([1, 2], tf.int64),
        "extras": {"area": tf.constant([36.0, 36.0])},
    }
    matrix = augment.affine_matrix(40, 40, scale=2.0)
    out = augment.drop_small_instances(augment.warp_affine(sample, matrix), 4, 1.0)
    assert out["classes"].numpy().tolist() == [2]
    np.testing.assert_allclose(out["boxes"].numpy()[0] * 40, [14.5, 14.5, 25.5, 25.5], atol=1.0)
    np.testing.assert_allclose(out["extras"]["area"].numpy(), [out["masks"].numpy().sum()])


def test_rotation_direction_matches_between_image_boxes_and_masks_without_masks():
    """Without masks the boxes follow the warped corners and still contain the object."""
    rng = np.random.default_rng(3)
    params = augment.AugmentationParams(
        rotate_prob=1.0, rotate_max_degrees=30.0, scale_prob=1.0, scale_min=0.8, scale_max=1.2
    )
    for seed in range(10):
        image, boxes, masks, classes, extras = make_example(rng)
        with_masks = augment.augment(image, boxes, masks, classes, extras, [seed, 1], params)
        without = augment.augment(image, boxes, None, classes, extras, [seed, 1], params)
        np.testing.assert_array_equal(with_masks[0].numpy(), without[0].numpy())
        kept = {t: i for i, t in enumerate(without[4]["tag"].numpy())}
        for j, tag in enumerate(with_masks[4]["tag"].numpy()):
            tight, loose = with_masks[1].numpy()[j], without[1].numpy()[kept[tag]]
            h, w = image.shape[:2]
            assert (loose[:2] * [h, w] <= tight[:2] * [h, w] + 1).all()
            assert (loose[2:] * [h, w] >= tight[2:] * [h, w] - 1).all()


COLOUR_ONLY = augment.AugmentationParams(
    brightness_prob=1.0,
    brightness_max_delta=0.3,
    contrast_prob=1.0,
    contrast_lower=0.5,
    contrast_upper=1.5,
    saturation_prob=1.0,
    saturation_lower=0.5,
    saturation_upper=1.5,
    hue_prob=1.0,
    hue_max_delta=0.2,
    grayscale_prob=0.5,
    blur_prob=1.0,
    blur_sigma_max=1.5,
    noise_prob=1.0,
    noise_std_max=0.05,
)


def test_colour_ops_change_only_the_image():
    fn = compiled(COLOUR_ONLY)
    rng = np.random.default_rng(0)
    changed = 0
    for seed in range(10):
        image, boxes, masks, classes, extras = make_example(rng)
        out = tf.nest.map_structure(lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [seed, 0]))
        assert out[0].dtype == np.uint8 and out[0].shape == image.shape
        changed += int(np.abs(out[0].astype(int) - image).mean() > 1)
        np.testing.assert_array_equal(out[1], boxes)
        np.testing.assert_array_equal(out[2], masks)
        np.testing.assert_array_equal(out[3], classes)
        for key in extras:
            np.testing.assert_array_equal(out[4][key], extras[key])
    assert changed == 10


def test_same_seed_same_output_and_different_seed_differs():
    params = augment_presets.PRESETS["heavy"]
    fn = compiled(params)
    image, boxes, masks, classes, extras = make_example(np.random.default_rng(11))
    a = tf.nest.map_structure(lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [5, 6]))
    b = tf.nest.map_structure(lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [5, 6]))
    c = augment.augment(image, boxes, masks, classes, extras, tf.constant([5, 6]), params)  # eager == graph
    for x, y, z in zip(tf.nest.flatten(a), tf.nest.flatten(b), tf.nest.flatten(c)):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z.numpy())
    others = [fn(image, boxes, masks, classes, extras, [s, 6])[0].numpy() for s in range(6, 10)]
    assert any(o.shape != a[0].shape or not np.array_equal(o, a[0]) for o in others)


def test_runs_in_parallel_tf_data_map_with_empty_and_full_examples():
    augmenter = augment_presets.build_augmenter(augment_presets.AugmentationConfig(preset="heavy", seed=1))
    rng = np.random.default_rng(2)
    examples = [make_example(rng) for _ in range(6)]
    examples[0] = (
        examples[0][0],
        np.zeros((0, 4), np.float32),
        np.zeros((0,) + examples[0][0].shape[:2], np.float32),
        np.zeros((0,), np.int64),
        {k: v[:0] for k, v in examples[0][4].items()},
    )

    def gen():
        yield from examples

    ds = tf.data.Dataset.from_generator(gen, output_signature=tuple(SIGNATURE[:5]))
    ds = ds.map(lambda i, b, m, c, e: augmenter(i, b, m, c, e), num_parallel_calls=4)
    outputs = list(ds.as_numpy_iterator())
    assert len(outputs) == 6 and len(outputs[0][3]) == 0
    for out in outputs:
        assert len(out[1]) == len(out[2]) == len(out[3]) == len(out[4]["tag"])


def test_presets_and_overrides():
    assert augment_presets.build_augmenter(augment_presets.AugmentationConfig()) is None
    assert augment_presets.build_augmenter(None) is None
    config = augment_presets.AugmentationConfig(preset="standard", rotate_max_degrees=3.0, hflip_prob=0.0)
    params = augment_presets.resolve_params(config)
    assert params.rotate_max_degrees == 3.0 and params.hflip_prob == 0.0
    assert params.scale_max == augment_presets.PRESETS["standard"].scale_max
    config.override({"preset": "light"})
    assert augment_presets.resolve_params(config).rotate_max_degrees == 3.0
    with pytest.raises(ValueError, match="unknown; choose one of"):
        augment_presets.resolve_params(augment_presets.AugmentationConfig(preset="strong"))
    with pytest.raises(ValueError, match="hflip_prob=1.5 must be in"):
        augment_presets.resolve_params(augment_presets.AugmentationConfig(preset="light", hflip_prob=1.5))
    for name in ("light", "standard", "heavy"):
        assert not augment_presets.PRESETS[name].is_identity
    assert set(f.name for f in dataclasses.fields(augment.AugmentationParams)) <= set(
        augment_presets.AugmentationConfig().as_dict()
    )


def test_config_seed_reproduces_a_sequential_tf_data_run():
    config = augment_presets.AugmentationConfig(preset="standard", seed=123)
    rng = np.random.default_rng(8)
    examples = [make_example(rng) for _ in range(4)]

    def run():
        augmenter = augment_presets.build_augmenter(config)
        ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=tuple(SIGNATURE[:5]))
        return [out[0] for out in ds.map(lambda i, b, m, c, e: augmenter(i, b, m, c, e)).as_numpy_iterator()]

    first, second = run(), run()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != e[0].shape or not np.array_equal(a, e[0]) for a, e in zip(first, examples))


def test_colour_matrix_applies_each_colour_op_as_defined():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (16, 24, 3)).astype(np.float32)
    pixels = image.reshape(-1, 3)

    def apply(**kwargs):
        matrix, offset = augment.colour_matrix(image, **kwargs)
        return pixels @ matrix.numpy() + offset.numpy()

    np.testing.assert_allclose(apply(), pixels, atol=1e-3)  # all identities
    np.testing.assert_allclose(apply(brightness=20.0), pixels + 20.0, atol=1e-3)
    # Contrast scales about the per-channel mean, which it keeps.
    out = apply(contrast=0.5)
    np.testing.assert_allclose(out.mean(axis=0), pixels.mean(axis=0), atol=1e-2)
    np.testing.assert_allclose(out - out.mean(axis=0), 0.5 * (pixels - pixels.mean(axis=0)), atol=1e-2)
    # Saturation 0 and grayscale give grey pixels at the luma; luma survives saturation and hue.
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    for grey in (apply(saturation=0.0), apply(grayscale=True)):
        np.testing.assert_allclose(grey, np.repeat(luma[:, None], 3, axis=1), atol=1e-2)
    for changed in (apply(saturation=1.7), apply(hue_turns=0.2)):
        assert np.abs(changed - pixels).mean() > 1.0
        np.testing.assert_allclose(changed @ np.array([0.299, 0.587, 0.114], np.float32), luma, atol=1e-2)
    np.testing.assert_allclose(apply(hue_turns=1.0), pixels, atol=1e-2)  # a full turn


@pytest.mark.parametrize("dy,dx", [(0, 5), (-7, 3), (12, -20), (-50, 0), (3, 90)])
def test_whole_pixel_move_by_copying_equals_the_warp(dy, dx):
    """The translation fast path gives what the general affine warp gives."""
    rng = np.random.default_rng(abs(dy) * 1000 + abs(dx))
    image, boxes, masks, classes, extras = make_example(rng)
    while len(classes) < 2:
        image, boxes, masks, classes, extras = make_example(rng)
    sample = {
        "image": tf.cast(image, tf.float32),
        "boxes": tf.constant(boxes),
        "masks": tf.constant(masks),
        "classes": tf.constant(classes),
        "extras": {k: tf.constant(v) for k, v in extras.items()},
    }
    h, w = image.shape[:2]
    matrix = augment.affine_matrix(h, w, translate_y=dy, translate_x=dx)
    shifted, shifted_pixels = augment._shift_counting(
        sample, matrix, tf.constant(float(dy)), tf.constant(float(dx)), 115.0
    )
    warped, warped_pixels = augment._warp_affine_counting(sample, matrix, 115.0)
    np.testing.assert_allclose(shifted["image"].numpy(), warped["image"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(shifted["masks"].numpy(), warped["masks"].numpy())
    np.testing.assert_allclose(shifted["boxes"].numpy(), warped["boxes"].numpy(), atol=1e-6)
    np.testing.assert_allclose(shifted_pixels.numpy(), warped_pixels.numpy())
    np.testing.assert_allclose(shifted["extras"]["area"].numpy(), warped["extras"]["area"].numpy())
    no_masks = dict(sample, masks=None)
    np.testing.assert_allclose(
        augment._shift_counting(no_masks, matrix, float(dy), float(dx), 115.0)[0]["boxes"].numpy(),
        augment.warp_affine(no_masks, matrix)["boxes"].numpy(),
        atol=1e-5,
    )


def test_unit_float_image_is_the_uint8_image_scaled_to_one():
    """The form the training parser asks for: float32 in [0, 1], the same pixels unrounded."""
    params = augment_presets.PRESETS["heavy"]
    rng = np.random.default_rng(4)
    for seed in range(5):
        image, boxes, masks, classes, extras = make_example(rng)
        as_uint8 = augment.augment(image, boxes, masks, classes, extras, [seed, 2], params)
        as_float = augment.augment(image, boxes, masks, classes, extras, [seed, 2], params, unit_float_image=True)
        assert as_float[0].dtype == tf.float32
        values = as_float[0].numpy()
        assert values.min() >= 0.0 and values.max() <= 1.0
        np.testing.assert_allclose(values * 255.0, as_uint8[0].numpy(), atol=0.5 + 1e-3)
        for a, b in zip(tf.nest.flatten(as_uint8[1:]), tf.nest.flatten(as_float[1:])):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    light = augment.AugmentationParams(hflip_prob=1.0)  # no float op: the uint8 image is converted
    out = augment.augment(image, boxes, masks, classes, extras, [0, 0], light, unit_float_image=True)[0]
    np.testing.assert_allclose(out.numpy() * 255.0, image[:, ::-1], atol=1e-3)
