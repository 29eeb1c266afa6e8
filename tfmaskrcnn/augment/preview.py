"""`tfmaskrcnn show-augment`: draw augmented samples so a person can check they line up.

    tfmaskrcnn show-augment data/train --preset standard --output grid.png
    tfmaskrcnn show-augment data/train --albumentations aug.yaml --output grid.png

Reads the first `--num-images` examples of a TFRecord dataset (the converter's output
directory or a glob; Model Garden TfExample layout, decoded with `TfExampleDecoder`),
augments each `--samples` times and draws a grid: the original in the first column,
augmented samples beside it, every instance mask as a translucent colour with its box
(dashed for crowd) and class name from `label_map.json`. Misaligned masks, boxes that
do not hug their mask and swapped classes are visible at a glance.

With `--copy-paste` (class-balanced copy-paste, run before the augmenter as in training)
pasted instances get a white dotted box and a `+` before their name. The flag and the
instance bank, which reads the records and class statistics (`tfmaskrcnn.dataloaders`, a
layer above this one), are wired in `tfmaskrcnn.cli.show_augment`; the drawing here only
takes the paste as an optional callable (`render_grid(..., paster=...)`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import numpy as np

from tfmaskrcnn.augment import presets as augment_presets

_PALETTE = (
    np.array(
        [
            (230, 25, 75),
            (60, 180, 75),
            (255, 225, 25),
            (0, 130, 200),
            (245, 130, 48),
            (145, 30, 180),
            (70, 240, 240),
            (240, 50, 230),
            (210, 245, 60),
            (250, 190, 212),
            (0, 128, 128),
            (170, 110, 40),
        ],
        np.float32,
    )
    / 255.0
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="converter output directory, or a TFRecord glob such as out/*.tfrecord")
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(augment_presets.PRESETS),
        help="augmentation preset (default: standard)",
    )
    parser.add_argument(
        "--albumentations",
        default=None,
        metavar="FILE",
        help="draw a saved Albumentations pipeline (A.save YAML/JSON; task.train_data.parser.augmentation."
        "albumentations) instead of a preset",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one augmentation field, e.g. --set rotate_max_degrees=30 (repeatable)",
    )
    parser.add_argument("--output", default="augment_grid.png", help="PNG to write (default: augment_grid.png)")
    parser.add_argument("--num-images", type=int, default=4, help="images (rows) to show (default: 4)")
    parser.add_argument("--samples", type=int, default=4, help="augmented samples per image (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed draws the same grid")


def find_tfrecords(data: str) -> list:
    import tensorflow as tf

    if tf.io.gfile.isdir(data):
        files = sorted(tf.io.gfile.glob(os.path.join(data, "*.tfrecord*")))
    else:
        files = sorted(f for pattern in data.split(",") for f in tf.io.gfile.glob(pattern.strip()))
    if not files:
        raise FileNotFoundError(
            f"no TFRecord files found for {data!r}; pass the output directory of `tfmaskrcnn convert` "
            "or a glob such as out/train-*.tfrecord"
        )
    return files


def class_names(data: str) -> dict:
    """Class id -> name from label_map.json beside the shards; ids are shown if it is missing."""
    from tfmaskrcnn.data import label_map

    path = label_map.find_label_map(data)
    if path is None:
        print(f"warning: no {label_map.LABEL_MAP_FILENAME} beside {data}; showing class ids", file=sys.stderr)
        return {}
    return {i: name for i, name in enumerate(label_map.LabelMap.load(path).names, start=1)}


def parse_overrides(items: list) -> dict:
    fields = {f.name: f.type for f in dataclasses.fields(augment_presets.AugmentationConfig)}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields or name in ("preset", "seed"):
            raise ValueError(
                f"--set {item!r}: expected NAME=VALUE with NAME one of the augmentation fields "
                f"({', '.join(sorted(set(fields) - {'preset', 'seed'}))})"
            )
        out[name] = int(value) if "int" in str(fields[name]) else float(value)
    return out


def draw_panel(ax, image, boxes, masks, classes, is_crowd, names, title, pasted=None):
    """One panel; `pasted` [N] bool marks pasted instances (white dotted box, `+` before the name)."""
    from matplotlib import patches

    pasted = np.zeros(len(classes), bool) if pasted is None else np.asarray(pasted, bool)

    height, width = image.shape[:2]
    canvas = image.astype(np.float32) / 255.0
    for mask, cls in zip(masks, classes):
        colour = _PALETTE[int(cls) % len(_PALETTE)]
        on = mask > 0.5
        canvas[on] = 0.55 * canvas[on] + 0.45 * colour
    ax.imshow(canvas, interpolation="nearest")
    for box, cls, crowd, is_pasted in zip(boxes, classes, is_crowd, pasted):
        colour = _PALETTE[int(cls) % len(_PALETTE)]
        ymin, xmin, ymax, xmax = box * [height, width, height, width]
        ax.add_patch(
            patches.Rectangle(
                (xmin - 0.5, ymin - 0.5),
                xmax - xmin,
                ymax - ymin,
                fill=False,
                edgecolor="white" if is_pasted else colour,
                linewidth=1.6 if is_pasted else 1.2,
                linestyle=":" if is_pasted else "--" if crowd else "-",
            )
        )
        ax.text(
            xmin - 0.5,
            ymin - 1.5,
            ("+" if is_pasted else "") + names.get(int(cls), f"class {int(cls)}") + (" (crowd)" if crowd else ""),
            color="white",
            fontsize=6,
            va="bottom",
            bbox=dict(facecolor=colour, alpha=0.8, pad=1, linewidth=0),
        )
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def render_grid(records, augmenter, names, samples: int, seed: int, output: str, paster=None) -> dict:
    """Draws originals + augmented samples; returns instance counts for the summary.

    `paster` (optional, the signature of an augmenter; `tfmaskrcnn.augment.copy_paste.make_copy_paster`)
    runs before `augmenter`, as in training; its pasted instances are marked.
    """
    import matplotlib

    from tfmaskrcnn.augment.copy_paste import PASTED_KEY

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    rows, cols = len(records), samples + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    counts = {"original_instances": 0, "augmented_instances": 0, "pasted_instances": 0, "panels": rows * samples}
    for r, data in enumerate(records):
        image = data["image"]
        masks = data["groundtruth_instance_masks"]
        extras = {"is_crowd": data["groundtruth_is_crowd"]}
        draw_panel(
            axes[r][0],
            image.numpy(),
            data["groundtruth_boxes"].numpy(),
            masks.numpy(),
            data["groundtruth_classes"].numpy(),
            extras["is_crowd"].numpy(),
            names,
            f"original {data['source_id'].numpy().decode()}",
        )
        counts["original_instances"] += samples * int(tf.shape(masks)[0])
        for s in range(samples):
            sample = (image, data["groundtruth_boxes"], masks, data["groundtruth_classes"], extras)
            if paster is not None:
                sample = paster(*sample, seed=tf.constant([seed + 1, r * 1000 + s], tf.int64))
            out = augmenter(*sample, seed=tf.constant([seed, r * 1000 + s], tf.int64))
            out_image, out_boxes, out_masks, out_classes, out_extras = out
            pasted = out_extras[PASTED_KEY].numpy() if PASTED_KEY in out_extras else None
            counts["augmented_instances"] += int(tf.shape(out_classes)[0])
            counts["pasted_instances"] += 0 if pasted is None else int(pasted.sum())
            draw_panel(
                axes[r][s + 1],
                out_image.numpy(),
                out_boxes.numpy(),
                out_masks.numpy(),
                out_classes.numpy(),
                out_extras["is_crowd"].numpy(),
                names,
                f"sample {s + 1}",
                pasted=pasted,
            )
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(handle)
    try:
        fig.savefig(temporary, dpi=110)
        os.replace(temporary, output)
    finally:
        plt.close(fig)
        if os.path.exists(temporary):
            os.remove(temporary)
    return counts


def _build_augmenter(args: argparse.Namespace):
    """(augmenter, what it is in words) from --preset/--set or --albumentations."""
    if getattr(args, "albumentations", None):
        if args.preset or args.overrides:
            raise ValueError("--albumentations runs instead of a preset: drop --preset and --set")
        from tfmaskrcnn.augment.albumentations_adapter import AlbumentationsAugmenter

        return AlbumentationsAugmenter(args.albumentations), f"Albumentations pipeline {args.albumentations}"
    preset = args.preset or "standard"
    config = augment_presets.AugmentationConfig(preset=preset, **parse_overrides(args.overrides))
    return augment_presets.make_augmenter(augment_presets.resolve_params(config)), f"preset {preset}"


def main(args: argparse.Namespace, make_paster=None) -> int:
    """`make_paster(files) -> paster` adds copy-paste (see `tfmaskrcnn.cli.show_augment`)."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    if args.num_images < 1 or args.samples < 1:
        print("error: --num-images and --samples must be at least 1", file=sys.stderr)
        return 2
    try:
        files = find_tfrecords(args.data)
        augmenter, drawn = _build_augmenter(args)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = class_names(args.data)
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    records = []
    for index, serialized in enumerate(tf.data.TFRecordDataset(files).take(args.num_images)):
        try:
            records.append(decoder.decode(serialized))
        except tf.errors.InvalidArgumentError as err:
            print(
                f"error: record {index} of {files} does not decode as a Model Garden TfExample "
                f"with masks ({err.message.splitlines()[0]}); re-create it with `tfmaskrcnn convert`",
                file=sys.stderr,
            )
            return 2
    if not records:
        print(f"error: {files} hold no records", file=sys.stderr)
        return 2
    try:
        paster = make_paster(files) if make_paster is not None else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = render_grid(records, augmenter, names, args.samples, args.seed, args.output, paster=paster)
    pasted = f", {counts['pasted_instances']} pasted (white dotted boxes)" if paster is not None else ""
    print(
        f"wrote {args.output}: {len(records)} images x {args.samples} samples, {drawn}; "
        f"instances kept {counts['augmented_instances']}/{counts['original_instances']}{pasted}"
    )
    return 0
