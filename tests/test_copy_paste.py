"""Class-balanced copy-paste: the in-graph op's properties over 50 seeds, the bank, the config,
and the task's training stream with it (tfmaskrcnn.augment.copy_paste, tfmaskrcnn.dataloaders.copy_paste).

The op's tests run on 64x64 synthetic examples built here: a noise background (so any
changed pixel shows), 1-4 rectangles and ellipses with classes 1..3, and a bank cut from
solid-colour objects, one colour per class, so a pasted pixel tells its class.
"""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 64
COLOURS = {1: (250, 20, 20), 2: (20, 250, 20), 3: (20, 20, 250)}  # pasted objects, by class
SEEDS = range(50)


def _ellipse(height, width, cy, cx, ry, rx):
    ys, xs = np.mgrid[:height, :width]
    return (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0).astype(np.float32)


def _tight_boxes(masks):
    boxes = []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
    return np.asarray(boxes, np.float32).reshape(-1, 4) / SIZE


def _example(seed):
    """(image, boxes, masks, classes, extras) with an `id` extra to follow each instance."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    masks = []
    for _ in range(rng.integers(1, 5)):
        h, w = rng.integers(6, 30, 2)
        y, x = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
        if rng.random() < 0.5:
            mask = np.zeros((SIZE, SIZE), np.float32)
            mask[y : y + h, x : x + w] = 1
        else:
            mask = _ellipse(SIZE, SIZE, y + h / 2, x + w / 2, h / 2, w / 2)
        masks.append(mask)
    masks = np.stack(masks)
    n = len(masks)
    classes = rng.integers(1, 4, n).astype(np.int64)
    extras = {
        "is_crowd": np.zeros(n, bool),
        "area": masks.sum((1, 2)).astype(np.float32),
        "id": np.arange(1, n + 1, dtype=np.int32),  # 0 is what pasted instances get
    }
    return image, _tight_boxes(masks), masks, classes, extras


def _bank(class_probs=(0.0, 1 / 3, 1 / 3, 1 / 3), per_class=4):
    """A bank cut (with `crop_instance`, as from records) from solid objects on noise."""
    from tfmaskrcnn.augment import copy_paste as paste_ops
    from tfmaskrcnn.dataloaders.copy_paste import crop_instance

    rng = np.random.default_rng(123)
    pixels, sizes, classes = [], [], []
    for class_id, colour in COLOURS.items():
        for _ in range(per_class):
            image = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
            h, w = rng.integers(8, 24, 2)
            mask = _ellipse(48, 48, 24, 24, h / 2, w / 2)
            image[mask > 0] = colour
            crop, size = crop_instance(image, mask, 16)
            pixels.append(crop)
            sizes.append(size)
            classes.append(class_id)
    return paste_ops.make_bank(np.stack(pixels), np.stack(sizes), np.array(classes), np.array(class_probs))


@pytest.fixture(scope="module")
def paste():
    """paste(seed, example_seed, **params) -> (outputs as numpy, layers as numpy, input example)."""
    import tensorflow as tf

    from tfmaskrcnn.augment import copy_paste as paste_ops

    bank = _bank()
    functions = {}

    def run(seed, example_seed=None, **overrides):
        params = paste_ops.CopyPasteParams(**{"max_instances": 3, **overrides})
        if params not in functions:
            functions[params] = tf.function(
                lambda image, boxes, masks, classes, extras, s: paste_ops.copy_paste(
                    image, boxes, masks, classes, extras, s, bank, params, return_layers=True
                ),
                reduce_retracing=True,
            )
        example = _example(seed if example_seed is None else example_seed)
        (image, boxes, masks, classes, extras), layers = functions[params](*example, tf.constant([seed, 7], tf.int64))
        out = dict(image=image.numpy(), boxes=boxes.numpy(), masks=masks.numpy(), classes=classes.numpy())
        out["extras"] = {k: v.numpy() for k, v in extras.items()}
        return out, {k: v.numpy() for k, v in layers.items()}, example

    return run


# ---------------------------------------------------------------- op properties


@pytest.mark.parametrize("blend_sigma", [1.0, 0.0])
def test_every_box_is_the_tight_box_of_its_mask_and_no_mask_is_empty(paste, blend_sigma):
    pasted_total = 0
    for seed in SEEDS:
        out, layers, _ = paste(seed, blend_sigma=blend_sigma)
        assert out["masks"].shape[0] == out["boxes"].shape[0] == out["classes"].shape[0]
        pixels = out["masks"].sum((1, 2))
        assert np.all(pixels >= 4), f"seed {seed}: an instance with {pixels.min()} mask pixels survived"
        np.testing.assert_allclose(out["boxes"] * SIZE, _tight_boxes(out["masks"]) * SIZE, atol=1.0, err_msg=seed)
        pasted_total += int(out["extras"]["pasted"].sum())
    assert pasted_total > 40, f"only {pasted_total} instances pasted over {len(SEEDS)} seeds"


@pytest.mark.parametrize("blend_sigma", [1.0, 0.0])
def test_pixels_under_a_pasted_mask_are_the_pasted_objects_and_outside_unchanged(paste, blend_sigma):
    checked = 0
    for seed in SEEDS:
        out, layers, example = paste(seed, blend_sigma=blend_sigma)
        image_in, alpha = example[0], layers["alpha"]
        # Outside every pasted object (alpha == 0) the image is the input, bit for bit.
        np.testing.assert_array_equal(out["image"][alpha == 0], image_in[alpha == 0], err_msg=f"seed {seed}")
        # Where alpha == 1 the image is the pasted layer...
        full = alpha == 1
        np.testing.assert_array_equal(out["image"][full], np.round(layers["layer"][full]).astype(np.uint8))
        # ...and under each pasted instance's (cut) mask, where no later paste's soft edge blends in
        # (top == 1), it is that instance's object: the colour of its class.
        alone = layers["top"] == 1
        for mask, class_id, pasted in zip(out["masks"], out["classes"], out["extras"]["pasted"]):
            if not pasted:
                continue
            under = (mask > 0) & alone
            assert under.any() or blend_sigma > 0, f"seed {seed}: a hard-edged paste with no alpha-1 pixel"
            colours = out["image"][under]
            np.testing.assert_array_equal(colours, np.broadcast_to(COLOURS[int(class_id)], colours.shape))
            checked += int(under.sum())
    assert checked > 1000


def test_class_ids_and_extras_travel_with_their_masks(paste):
    for seed in SEEDS:
        out, _, example = paste(seed)
        _, _, masks_in, classes_in, extras_in = example
        ids, pasted = out["extras"]["id"], out["extras"]["pasted"]
        assert np.all((ids == 0) == pasted), "pasted instances get zeros for unknown extras, originals keep theirs"
        assert list(pasted) == sorted(pasted), "pasted instances come after the example's own"
        assert not out["extras"]["is_crowd"][pasted].any()
        np.testing.assert_allclose(out["extras"]["area"], out["masks"].sum((1, 2)), err_msg=seed)
        for mask, class_id, instance in zip(out["masks"][~pasted], out["classes"][~pasted], ids[~pasted]):
            assert class_id == classes_in[instance - 1]
            assert np.all(mask <= masks_in[instance - 1]), "a cut mask can only lose pixels"


def test_masks_underneath_are_cut_by_the_pasted_ones(paste):
    cut = 0
    for seed in SEEDS:
        out, _, example = paste(seed)
        pasted = out["extras"]["pasted"]
        for i in np.flatnonzero(pasted):
            for j in range(i):  # everything before it (own instances, earlier pastes) lies underneath
                assert not np.any((out["masks"][i] > 0) & (out["masks"][j] > 0)), f"seed {seed}: {j} under {i}"
        for mask, instance in zip(out["masks"][~pasted], out["extras"]["id"][~pasted]):
            cut += int(mask.sum() < example[2][instance - 1].sum())
    assert cut > 5, f"only {cut} instances were cut by a paste over {len(SEEDS)} seeds"


def test_deterministic_under_a_seed_and_different_under_another(paste):
    differ = 0
    for seed in SEEDS:
        first, _, _ = paste(seed)
        again, _, _ = paste(seed)
        other, _, _ = paste(seed + 1000, example_seed=seed)
        np.testing.assert_array_equal(first["image"], again["image"])
        np.testing.assert_array_equal(first["masks"], again["masks"])
        np.testing.assert_array_equal(first["classes"], again["classes"])
        same = first["image"].shape == other["image"].shape and np.array_equal(first["image"], other["image"])
        differ += not (same and np.array_equal(first["classes"], other["classes"]))
    assert differ >= 40, f"only {differ} of {len(SEEDS)} seed pairs gave different outputs"


def test_respects_max_total_instances(paste):
    for seed in range(20):
        out, _, example = paste(seed, max_total_instances=4)
        assert len(out["classes"]) <= max(4, len(example[3]))


def test_class_sampling_follows_the_bank_probabilities():
    import tensorflow as tf
    from scipy import stats

    from tfmaskrcnn.augment import copy_paste as paste_ops

    probs = np.array([0.0, 0.6, 0.3, 0.1])
    bank = _bank(class_probs=probs)
    params = paste_ops.CopyPasteParams(max_instances=3, scale_min=0.5, scale_max=0.6)
    empty = (np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros((0, SIZE, SIZE), np.float32))

    @tf.function
    def pasted_classes(seed):
        _, _, _, classes, _ = paste_ops.copy_paste(*empty, np.zeros(0, np.int64), None, seed, bank, params)
        return classes

    counts = np.zeros(4)
    for seed in range(400):
        # Later pastes can cover earlier ones entirely (dropped), whatever their class: count before that.
        counts += np.bincount(pasted_classes(tf.constant([seed, 1], tf.int64)).numpy(), minlength=4)
    observed = counts[1:]
    assert observed.sum() > 400
    _, p_value = stats.chisquare(observed, probs[1:] * observed.sum())
    assert p_value > 0.001, f"pasted class counts {observed} do not follow {probs[1:]} (p = {p_value:.2g})"


# ---------------------------------------------------------------- bank


def test_class_quotas_keep_rare_classes_whole():
    from tfmaskrcnn.dataloaders.copy_paste import class_quotas

    np.testing.assert_array_equal(class_quotas([900, 70, 30], 200), [100, 70, 30])
    np.testing.assert_array_equal(class_quotas([900, 70, 30], 2000), [900, 70, 30])
    quotas = class_quotas([500, 500, 3, 0], 101)
    assert quotas.sum() == 101 and quotas[2] == 3 and quotas[3] == 0 and abs(quotas[0] - quotas[1]) <= 1


def test_class_probabilities_per_scheme():
    from tfmaskrcnn.dataloaders import sampling
    from tfmaskrcnn.dataloaders.copy_paste import InstanceIndex, class_probabilities

    # 4 images; class 1: 6 instances in 4 images, class 2: 2 in 1, class 3: none.
    index = InstanceIndex(
        records=np.array([0, 0, 1, 1, 2, 3, 3, 3]),
        instances=np.arange(8),
        classes=np.array([1, 1, 1, 1, 1, 1, 2, 2]),
        num_images=4,
        num_classes=3,
    )
    np.testing.assert_allclose(class_probabilities("uniform", index), [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(class_probabilities("inverse", index), [0, 0.25, 0.75, 0])
    r = sampling.repeat_factors([1.0, 0.25, 0.0], 0.5)
    np.testing.assert_allclose(class_probabilities("repeat_factor", index, 0.5), [0, r[0], r[1], 0] / (r[0] + r[1]))
    with pytest.raises(ValueError, match="repeat_factor, inverse, uniform"):
        class_probabilities("balanced", index)


def test_bank_from_records_follows_the_quotas(shapes_records):
    from tfmaskrcnn.data import records
    from tfmaskrcnn.dataloaders.copy_paste import class_quotas, read_bank

    files = records.tfrecord_files(shapes_records["train"])
    bank_size = 30  # fewer than the fixture's instances: every class is subsampled
    bank = read_bank(files, bank_size=bank_size, crop_size=32, class_sampling="inverse", seed=0)
    counts = bank.index.instance_counts()
    quotas = class_quotas(counts, bank_size)
    kept = np.array([bank.summary()[c][1] for c in range(1, len(counts) + 1)])
    # Chosen per the quotas; an instance under MIN_SOURCE_PIXELS mask pixels is not cropped.
    assert np.all(kept <= quotas) and kept.sum() >= 0.8 * bank_size, (kept, quotas)
    assert bank.pixels.shape == (kept.sum(), 32, 32, 4) and bank.pixels.dtype == np.uint8
    assert all(source for source, _ in bank.sources) and np.all(bank.sizes >= 1)
    assert np.mean(bank.pixels[..., 3] > 127) > 0.4, "crops hold their instance: the mask channel is mostly on"
    rarest = int(np.argmin(counts)) + 1
    assert bank.class_probs[rarest] == max(bank.class_probs), "inverse favours the class with fewest instances"
    again = read_bank(files, bank_size=bank_size, crop_size=32, class_sampling="inverse", seed=0)
    np.testing.assert_array_equal(again.pixels, bank.pixels)


def test_config_errors_say_the_fix():
    from tfmaskrcnn.configs.maskrcnn import CopyPasteConfig
    from tfmaskrcnn.dataloaders.copy_paste import copy_paste_params

    cases = [
        ({"class_sampling": "balanced"}, "use one of repeat_factor, inverse, uniform"),
        ({"scale_min": 2.0, "scale_max": 1.0}, "need 0 < scale_min <= scale_max"),
        ({"max_instances": -1}, "integer >= 0"),
        ({"blend_sigma": -1.0}, "0 \\(hard edges\\)"),
        ({"bank_size": 0}, "positive number"),
        ({"crop_size": 4}, "8..512"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError, match=message):
            copy_paste_params(CopyPasteConfig({"enabled": True, **fields}))
    assert copy_paste_params(CopyPasteConfig({"enabled": True})).max_instances == 3


# ---------------------------------------------------------------- task


def _task(params):
    from tfmaskrcnn.tasks import config_resolution
    from tfmaskrcnn.tasks.maskrcnn import TfMaskRCNNTask

    config_resolution.resolve_config(params.task)
    return TfMaskRCNNTask(params.task)


def _copy_paste_params(tiny_experiment, shapes_records, enabled: bool, train_steps: int = 2):
    params = tiny_experiment(shapes_records, train_steps=train_steps)
    params.task.train_data.seed = 3
    params.task.train_data.parser.aug_scale_min = 1.0  # no crop: every instance stays countable
    params.task.train_data.parser.aug_scale_max = 1.0
    params.task.train_data.parser.copy_paste.enabled = enabled
    params.task.train_data.parser.copy_paste.max_instances = 4
    params.task.train_data.parser.copy_paste.seed = 5
    return params


def _instances_per_image(task, data_config, num_batches: int = 12) -> float:
    total, images = 0, 0
    for _, labels in task.build_inputs(data_config).take(num_batches):
        classes = labels["gt_classes"].numpy()
        total += int((classes > 0).sum())
        images += classes.shape[0]
    return total / images


def test_the_training_stream_with_copy_paste_has_more_instances(shapes_records, tiny_experiment):
    stock_params = _copy_paste_params(tiny_experiment, shapes_records, enabled=False)
    stock_task = _task(stock_params)
    assert stock_task._build_parser(stock_params.task.train_data)._copy_paster is None  # pylint: disable=protected-access
    stock = _instances_per_image(stock_task, stock_params.task.train_data)
    params = _copy_paste_params(tiny_experiment, shapes_records, enabled=True)
    task = _task(params)
    assert task._build_parser(params.task.validation_data)._copy_paster is None  # pylint: disable=protected-access
    pasted = _instances_per_image(task, params.task.train_data)
    # U{0..4} pastes add 2 per image on average; a few are covered by later ones or cut away.
    assert pasted > stock + 1.0, f"instances per image: {pasted:.2f} with copy-paste, {stock:.2f} without"


@pytest.mark.slow
def test_one_training_step_with_copy_paste(shapes_records, tiny_experiment, tmp_path):
    from tfmaskrcnn.cli import train

    params = _copy_paste_params(tiny_experiment, shapes_records, enabled=True, train_steps=1)
    params.task.train_data.sampling.type = "repeat_factor"
    params.task.train_data.parser.augmentation.preset = "standard"
    model_dir = str(tmp_path / "run")
    train.run(params, model_dir, "train")
    import os

    assert any(name.startswith("ckpt-1") for name in os.listdir(model_dir))


# ---------------------------------------------------------------- preview


def test_show_augment_draws_copy_paste_samples_with_pasted_instances_marked(shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli

    output = tmp_path / "grid.png"
    argv = ["show-augment", shapes_records["train"], "--output", str(output), "--num-images", "2", "--samples", "3"]
    assert cli.main(argv + ["--copy-paste", "--class-sampling", "uniform", "--max-instances", "4"]) == 0
    assert output.stat().st_size > 1000
    printed = capsys.readouterr().out
    pasted = int(printed.split(" pasted")[0].rsplit(" ", 1)[-1])
    assert pasted > 0, printed
    assert cli.main(argv) == 0 and "pasted" not in capsys.readouterr().out


def test_draw_panel_marks_pasted_instances():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfmaskrcnn.augment import preview

    image, boxes, masks, classes, extras = _example(0)
    fig, ax = plt.subplots()
    pasted = np.arange(len(classes)) == 0
    preview.draw_panel(ax, image, boxes, masks, classes, extras["is_crowd"], {}, "t", pasted=pasted)
    styles = [(p.get_linestyle(), p.get_edgecolor()[:3]) for p in ax.patches]
    labels = [t.get_text() for t in ax.texts]
    plt.close(fig)
    assert styles[0] == (":", (1.0, 1.0, 1.0)) and all(style[0] == "-" for style in styles[1:])
    assert labels[0].startswith("+") and not any(label.startswith("+") for label in labels[1:])
