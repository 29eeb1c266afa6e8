"""Ground truth for evaluation: a pycocotools COCO object from a COCO JSON or TFRecords.

Category ids differ by source, and detections must use the same ids:
- COCO JSON: the JSON's own category ids (e.g. 1..90 with gaps for COCO-2017).
- TFRecords written by `tfmaskrcnn convert`: the contiguous ids 1..K the model is
  trained on, named by the `label_map.json` next to the shards.

Also here: image loaders for the report (from an image folder or from the TFRecords).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tfmaskrcnn.data.records import decoded_examples

# image ids -> {image_id: HxWx3 uint8 array}; ids it cannot find are left out.
ImageLoader = Callable[[Sequence[int]], dict]


def coco_from_dataset(dataset: dict) -> COCO:
    """A COCO index over an in-memory dataset dict, without pycocotools' prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_json(path: str, what: str) -> Any:
    """Parsed JSON, or an error that names `what` the file is and the path."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path}: not valid JSON ({e})") from None


def load_coco_json(path: str) -> COCO:
    """Loads a COCO instances JSON with a clear error for the usual mistakes."""
    dataset = read_json(path, "ground truth")
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise ValueError(
                f"{path}: no '{key}' list; expected a COCO instances file (images, annotations, categories)"
            )
    return coco_from_dataset(dataset)


def coco_from_tfrecords(pattern: str, label_map: Any, include_mask: bool = True, progress: bool = True) -> COCO:
    """COCO ground truth from TFRecord shards; category ids are the contiguous 1..K of `label_map`."""
    from tqdm import tqdm

    images, annotations = [], []
    seen: dict[int, str] = {}
    for path, n, ex in tqdm(
        decoded_examples(pattern, include_mask), desc="reading ground truth", unit=" images", disable=not progress
    ):
        source_id = ex["source_id"].decode() if isinstance(ex["source_id"], bytes) else str(ex["source_id"])
        if not source_id.isdigit():
            raise ValueError(f"{path}: record {n} has image/source_id {source_id!r}; it must be a numeric string")
        image_id = int(source_id)
        if image_id in seen:
            raise ValueError(f"{path}: record {n} repeats image/source_id {image_id} (first in {seen[image_id]})")
        seen[image_id] = path
        height, width = int(ex["height"]), int(ex["width"])
        images.append({"id": image_id, "height": height, "width": width})
        for k, label in enumerate(ex["groundtruth_classes"]):
            label = int(label)
            if not 1 <= label <= label_map.num_classes:
                raise ValueError(
                    f"{path}: record {n} (image {image_id}) has class {label}; the label map has "
                    f"classes 1..{label_map.num_classes}; rewrite the shards or fix label_map.json"
                )
            ymin, xmin, ymax, xmax = (float(v) for v in ex["groundtruth_boxes"][k])
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": label,
                "iscrowd": int(ex["groundtruth_is_crowd"][k]),
                "bbox": [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                "area": float(ex["groundtruth_area"][k]),
            }
            # Shards written without masks decode to zero masks: boxes only then.
            if include_mask and len(ex["groundtruth_instance_masks"]) == len(ex["groundtruth_classes"]):
                binary = np.asfortranarray((ex["groundtruth_instance_masks"][k] > 0).astype(np.uint8))
                rle = mask_utils.encode(binary)
                rle["counts"] = rle["counts"].decode()
                ann["segmentation"] = rle
            annotations.append(ann)
    categories = [{"id": i, "name": label_map.name(i)} for i in range(1, label_map.num_classes + 1)]
    return coco_from_dataset({"images": images, "annotations": annotations, "categories": categories})


def directory_image_loader(coco_gt: COCO, image_dir: str) -> ImageLoader:
    """Loads images named by the ground truth's `file_name` from a folder."""

    def load(image_ids: Sequence[int]) -> dict:
        from PIL import Image

        loaded = {}
        for image_id in image_ids:
            name = coco_gt.imgs.get(int(image_id), {}).get("file_name")
            path = os.path.join(image_dir, name) if name else None
            if path and os.path.isfile(path):
                with Image.open(path) as image:
                    loaded[int(image_id)] = np.asarray(image.convert("RGB"))
        return loaded

    return load


def tfrecord_image_loader(pattern: str) -> ImageLoader:
    """Decodes only the requested images in one pass over the shards."""

    def load(image_ids: Sequence[int]) -> dict:
        wanted, loaded = {int(i) for i in image_ids}, {}
        for _, _, ex in decoded_examples(pattern, include_mask=False, include_image=True):
            source_id = ex["source_id"].decode() if isinstance(ex["source_id"], bytes) else str(ex["source_id"])
            if source_id.isdigit() and int(source_id) in wanted:
                loaded[int(source_id)] = ex["image"]
                if len(loaded) == len(wanted):
                    break
        return loaded

    return load
