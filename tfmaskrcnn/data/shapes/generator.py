"""The synthetic shapes dataset in COCO format (`tfmaskrcnn shapes`).

Coloured shapes on varied backgrounds, with a class mix you choose: the train split
follows `class_ratios` (for example 0.9,0.07,0.03 to reproduce a real imbalance), the
val split is balanced unless told otherwise. Colour is drawn independently of the
class, so a model has to learn shape.

Masks are the visible pixels of each instance. An instance nothing covers is written
as a polygon; one that later shapes partly cover is written as compressed RLE, so both
COCO mask encodings occur in every dataset.

Layout written under the output directory:
    annotations/instances_train.json, annotations/instances_val.json
    train/000001.png ..., val/000001.png ...   (`file_name` is relative to the split dir)

Same seed, same arguments (and the same numpy/Pillow/zlib) -> byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import sys
from typing import Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from tfmaskrcnn.data.shapes.draw import SHAPE_NAMES, ShapeInstance, render_scene
from tfmaskrcnn.io import write_atomic

__all__ = [
    "SHAPE_NAMES",
    "generate_shapes_dataset",
    "normalize_class_ratios",
    "parse_class_ratios",
    "add_arguments",
    "main",
]

SPLITS = ("train", "val")


def normalize_class_ratios(ratios: Sequence[float], name: str = "class_ratios") -> tuple[float, ...]:
    """Positive per-class ratios -> shares summing to 1. Their count is the number of classes."""
    values = []
    for i, value in enumerate(ratios):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}[{i}] = {value!r} is not a number; give one positive number per class, e.g. 0.9,0.07,0.03"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"{name}[{i}] = {value!r}: every class ratio must be a positive "
                f"finite number (drop the class instead of giving it 0)"
            )
        values.append(value)
    if not values:
        raise ValueError(f"{name} is empty: give one positive number per class, e.g. 1,1,1")
    if len(values) > len(SHAPE_NAMES):
        raise ValueError(
            f"{name} has {len(values)} entries but only {len(SHAPE_NAMES)} shape "
            f"classes exist ({', '.join(SHAPE_NAMES)}): give at most {len(SHAPE_NAMES)}"
        )
    total = sum(values)
    return tuple(v / total for v in values)


def parse_class_ratios(text: str) -> tuple[float, ...]:
    """argparse type for "0.9,0.07,0.03": the ratios as given (checked, not yet normalized);
    errors name the bad entry."""
    parts = [p.strip() for p in text.split(",")]
    try:
        normalize_class_ratios(parts, name="ratio")
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return tuple(float(p) for p in parts)


def exact_class_counts(shares: Sequence[float], total: int) -> np.ndarray:
    """Instances per class that sum to `total` and follow `shares` as closely as integers
    can (largest remainder; ties go to the earlier class)."""
    ideal = np.asarray(shares, dtype=np.float64) * total
    counts = np.floor(ideal).astype(np.int64)
    remainder = total - int(counts.sum())
    order = sorted(range(len(shares)), key=lambda k: (-(ideal[k] - counts[k]), k))
    for k in order[:remainder]:
        counts[k] += 1
    return counts


def encode_instance(instance: ShapeInstance) -> dict:
    """COCO `segmentation`, `area` and `bbox` of an instance's visible pixels."""
    visible = instance.visible_mask
    ys, xs = np.nonzero(visible)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    if instance.occluded:
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = [list(instance.polygon)]
    return {"segmentation": segmentation, "area": int(visible.sum()), "bbox": bbox, "iscrowd": 0}


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _split_classes(
    rng: np.random.Generator, num_images: int, max_objects: int, shares: Sequence[float]
) -> list[list[int]]:
    # The class of each instance is a draw without replacement from a pool holding each class
    # in proportion to its share, so realised shares equal the requested ones up to rounding
    # (independent draws would leave a 3% class anywhere between 2% and 4% on 400 images).
    objects_per_image = rng.integers(1, max_objects + 1, size=num_images)
    counts = exact_class_counts(shares, int(objects_per_image.sum()))
    pool = np.repeat(np.arange(len(shares)), counts)
    rng.shuffle(pool)
    bounds = np.concatenate([[0], np.cumsum(objects_per_image)])
    return [pool[bounds[i] : bounds[i + 1]].tolist() for i in range(num_images)]


def _generate_split(
    split: str,
    split_index: int,
    output_dir: pathlib.Path,
    num_images: int,
    shares: Sequence[float],
    image_size: int,
    seed: int,
    max_objects: int,
    progress: bool,
    shape_ids: Sequence[int] | None = None,
) -> dict:
    shape_ids = list(shape_ids if shape_ids is not None else range(len(shares)))
    position = {shape: k for k, shape in enumerate(shape_ids)}  # shape index -> class position
    image_dir = output_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    # One stream for the class pool of each split and one for the pixels of each image, all
    # derived from (seed, split): train and val never share draws.
    classes_per_image = _split_classes(np.random.default_rng([seed, split_index]), num_images, max_objects, shares)
    images, annotations = [], []
    per_class = [0] * len(shares)
    num_rle = 0
    unplaced = 0
    for i in tqdm(range(num_images), desc=f"shapes {split}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, split_index, i + 1])
        pixels, instances, missed = render_scene(rng, [shape_ids[c] for c in classes_per_image[i]], image_size)
        unplaced += len(missed)
        image_id = i + 1
        file_name = f"{image_id:06d}.png"
        write_atomic(str(image_dir / file_name), _png_bytes(pixels))
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for instance in instances:
            k = position[instance.class_index]
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1}
            annotation.update(encode_instance(instance))
            annotations.append(annotation)
            per_class[k] += 1
            num_rle += int(instance.occluded)
    names = [SHAPE_NAMES[shape] for shape in shape_ids]
    categories = [{"id": k + 1, "name": names[k], "supercategory": "shape"} for k in range(len(shares))]
    coco = {
        "info": {
            "description": f"tfmaskrcnn synthetic shapes, {split} split",
            "seed": seed,
            "class_ratios": [round(s, 6) for s in shares],
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    annotation_file = output_dir / "annotations" / f"instances_{split}.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(coco, separators=(",", ":")).encode("utf-8")
    write_atomic(str(annotation_file), payload)
    return {
        "annotation_file": str(annotation_file),
        "image_dir": str(image_dir),
        "num_images": num_images,
        "num_instances": len(annotations),
        "instances_per_class": {names[k]: per_class[k] for k in range(len(shares))},
        "requested_shares": {names[k]: shares[k] for k in range(len(shares))},
        "polygon_instances": len(annotations) - num_rle,
        "rle_instances": num_rle,
        "unplaced_instances": unplaced,
    }


def generate_shapes_dataset(
    output_dir,
    num_train: int = 400,
    num_val: int = 100,
    class_ratios: Sequence[float] | None = None,
    val_class_ratios: Sequence[float] | None = None,
    image_size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
    progress: bool = True,
    classes: Sequence[str] | None = None,
) -> dict:
    """Writes the shapes dataset under `output_dir` and returns a summary:
    {"output_dir", "categories": [names], "splits": {"train": {...}, "val": {...}}} where each
    split has annotation_file, image_dir, num_images, num_instances, instances_per_class
    (name -> count), requested_shares, polygon_instances, rle_instances, unplaced_instances.

    class_ratios: train share per class (default 3 balanced classes); their count sets the
    number of classes. val_class_ratios: same length; default balanced.
    classes: shape names to draw, in class-id order (default the first K of SHAPE_NAMES), e.g.
    ("hexagon", "cross", "ellipse", "arrow") for a dataset that shares no class with the default one.
    """
    shape_ids = None
    if classes is not None:
        unknown = [name for name in classes if name not in SHAPE_NAMES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes {list(classes)}: give distinct names among {', '.join(SHAPE_NAMES)}")
        shape_ids = [SHAPE_NAMES.index(name) for name in classes]
        if class_ratios is None:
            class_ratios = (1,) * len(classes)
    train_shares = normalize_class_ratios(class_ratios if class_ratios is not None else (1, 1, 1))
    if shape_ids is not None and len(shape_ids) != len(train_shares):
        raise ValueError(f"classes has {len(shape_ids)} names but class_ratios has {len(train_shares)} entries")
    num_classes = len(train_shares)
    if val_class_ratios is None:
        val_shares = tuple([1.0 / num_classes] * num_classes)
    else:
        val_shares = normalize_class_ratios(val_class_ratios, name="val_class_ratios")
        if len(val_shares) != num_classes:
            raise ValueError(
                f"val_class_ratios has {len(val_shares)} entries but class_ratios has "
                f"{num_classes}: both splits use the same classes, give one ratio per class"
            )
    for name, value, minimum in (
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
        ("image_size", image_size, 32),
        ("max_objects", max_objects, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} = {value!r}: must be an integer >= {minimum}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r}: must be a non-negative integer")
    output_dir = pathlib.Path(output_dir)
    splits = {}
    for split_index, (split, count, shares) in enumerate(
        (("train", num_train, train_shares), ("val", num_val, val_shares))
    ):
        splits[split] = _generate_split(
            split,
            split_index,
            output_dir,
            int(count),
            shares,
            int(image_size),
            int(seed),
            int(max_objects),
            progress,
            shape_ids=shape_ids,
        )
    names = [SHAPE_NAMES[k] for k in shape_ids] if shape_ids is not None else list(SHAPE_NAMES[:num_classes])
    return {"output_dir": str(output_dir), "categories": names, "splits": splits}


def format_summary(summary: dict) -> str:
    """Per-split, per-class instance counts with their shares, as a small text table."""
    names = summary["categories"]
    width = max(len(n) for n in names + ["instances"])
    lines = [
        f"shapes dataset written to {summary['output_dir']}",
        f"{'split':<6} {'images':>6} {'instances':>{width}}  " + "  ".join(f"{n:>{max(len(n), 11)}}" for n in names),
    ]
    for split, info in summary["splits"].items():
        total = max(info["num_instances"], 1)
        cells = [
            f"{info['instances_per_class'][n]} ({100 * info['instances_per_class'][n] / total:.1f}%)" for n in names
        ]
        lines.append(
            f"{split:<6} {info['num_images']:>6} {info['num_instances']:>{width}}  "
            + "  ".join(f"{c:>{max(len(n), 11)}}" for c, n in zip(cells, names))
        )
    for split, info in summary["splits"].items():
        note = f"{split}: {info['polygon_instances']} polygon masks, {info['rle_instances']} RLE (occluded)"
        if info["unplaced_instances"]:
            note += f"; {info['unplaced_instances']} shapes found no room and were left out"
        lines.append(note)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="directory to write the dataset into")
    parser.add_argument("--num-train", type=int, default=400, help="train images (default 400)")
    parser.add_argument("--num-val", type=int, default=100, help="val images (default 100)")
    parser.add_argument(
        "--class-ratios",
        type=parse_class_ratios,
        default=None,
        metavar="R1,R2,...",
        help="share of train instances per class, e.g. 0.9,0.07,0.03; the count sets "
        f"the number of classes (1..{len(SHAPE_NAMES)}: {', '.join(SHAPE_NAMES)}); "
        "normalized; default 3 balanced classes",
    )
    parser.add_argument(
        "--val-class-ratios",
        type=parse_class_ratios,
        default=None,
        metavar="R1,R2,...",
        help="share of val instances per class, same count as --class-ratios; default balanced",
    )
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-objects", type=int, default=4, help="at most this many shapes per image (default 4)")


def main(args: argparse.Namespace) -> int:
    try:
        summary = generate_shapes_dataset(
            args.output,
            num_train=args.num_train,
            num_val=args.num_val,
            class_ratios=args.class_ratios,
            val_class_ratios=args.val_class_ratios,
            image_size=args.image_size,
            seed=args.seed,
            max_objects=args.max_objects,
        )
    except ValueError as error:
        print(f"tfmaskrcnn shapes: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
