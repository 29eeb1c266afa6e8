"""Ground truth for evaluation: a pycocotools COCO object from a COCO JSON or TFRecords.

Category ids differ by source, and detections must use the same ids:
- COCO JSON: the JSON's own category ids (e.g. 1..90 with gaps for COCO-2017).
- TFRecords written by `tfmaskrcnn convert`: the contiguous ids 1..K the model is
  trained on, named by the `label_map.json` next to the shards.

Also here: image loaders for the report (from an image folder or from the TFRecords)
and `simulate_detections`, which turns ground truth into detections with controlled
errors, to check an evaluation pipeline end to end on known answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

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
            raise ValueError(f"{path}: no '{key}' list; expected a COCO instances file "
                             "(images, annotations, categories)")
    return coco_from_dataset(dataset)


def _tfrecord_files(pattern: str) -> list[str]:
    """Files of a glob, a file, or a comma-separated list of these (local or gs://)."""
    import tensorflow as tf

    files = []
    for part in (p.strip() for p in pattern.split(",") if p.strip()):
        files.extend(sorted(tf.io.gfile.glob(part)))
    if not files:
        raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
    return files


def _decoded_examples(pattern: str, include_mask: bool, include_image: bool = False) -> Iterable[dict]:
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(include_mask=include_mask)
    for path in _tfrecord_files(pattern):
        for n, record in enumerate(tf.data.TFRecordDataset(path)):
            try:
                decoded = decoder.decode(record)
            except (tf.errors.InvalidArgumentError, ValueError) as e:
                raise ValueError(f"{path}: record {n} is not a Model Garden detection tf.Example "
                                 f"({str(e).splitlines()[0]}); write shards with `tfmaskrcnn convert`") from None
            if not include_image:
                decoded.pop("image")
            yield path, n, {k: v.numpy() for k, v in decoded.items()}


def coco_from_tfrecords(pattern: str, label_map: Any, include_mask: bool = True, progress: bool = True) -> COCO:
    """COCO ground truth from TFRecord shards; category ids are the contiguous 1..K of `label_map`."""
    from tqdm import tqdm

    images, annotations = [], []
    seen: dict[int, str] = {}
    for path, n, ex in tqdm(_decoded_examples(pattern, include_mask), desc="reading ground truth",
                            unit=" images", disable=not progress):
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
                raise ValueError(f"{path}: record {n} (image {image_id}) has class {label}; the label map has "
                                 f"classes 1..{label_map.num_classes}; rewrite the shards or fix label_map.json")
            ymin, xmin, ymax, xmax = (float(v) for v in ex["groundtruth_boxes"][k])
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                   "iscrowd": int(ex["groundtruth_is_crowd"][k]),
                   "bbox": [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                   "area": float(ex["groundtruth_area"][k])}
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
        for _, _, ex in _decoded_examples(pattern, include_mask=False, include_image=True):
            source_id = ex["source_id"].decode() if isinstance(ex["source_id"], bytes) else str(ex["source_id"])
            if source_id.isdigit() and int(source_id) in wanted:
                loaded[int(source_id)] = ex["image"]
                if len(loaded) == len(wanted):
                    break
        return loaded
    return load


def simulate_detections(
    coco_gt: COCO,
    seed: int = 0,
    drop_rate: float = 0.0,
    class_swaps: dict[int, int] | None = None,
    box_jitter: float = 0.0,
    false_positives_per_image: int = 0,
    copies: int = 1,
    with_masks: bool = True,
) -> list[dict]:
    """COCO-format detections made from the ground truth with controlled errors.

    drop_rate: share of objects left undetected. class_swaps: {true category id:
    predicted category id}. box_jitter: box corners move by up to this share of the box
    size (the mask moves with the box, so mask IoU degrades too). false_positives_per_image:
    random boxes with random classes. copies: detections per object (extra copies get
    lower scores and more jitter, as duplicate detections do). Crowd regions are skipped.
    """
    rng = np.random.default_rng(seed)
    swaps = class_swaps or {}
    category_ids = sorted(coco_gt.getCatIds())
    detections = []
    for image_id in sorted(coco_gt.getImgIds()):
        info = coco_gt.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        for ann in coco_gt.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0) or rng.random() < drop_rate:
                continue
            for copy in range(copies):
                x, y, w, h = ann["bbox"]
                scale = box_jitter * (1 + copy)
                dx0, dy0, dx1, dy1 = rng.uniform(-scale, scale, 4) * [w, h, w, h]
                x0, y0 = np.clip([x + dx0, y + dy0], 0, [width - 1, height - 1])
                x1, y1 = np.clip([x + w + dx1, y + h + dy1], [x0 + 1, y0 + 1], [width, height])
                det = {"image_id": image_id, "category_id": swaps.get(ann["category_id"], ann["category_id"]),
                       "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                       "score": float(rng.uniform(0.6, 1.0) / (1 + copy))}
                if with_masks:
                    mask = coco_gt.annToMask(ann)
                    shift_x, shift_y = int(round(dx0)), int(round(dy0))
                    mask = np.roll(np.roll(mask, shift_y, axis=0), shift_x, axis=1)
                    det["segmentation"] = _encode(mask)
                detections.append(det)
        for _ in range(false_positives_per_image):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            det = {"image_id": image_id, "category_id": int(rng.choice(category_ids)),
                   "bbox": [float(x), float(y), float(w), float(h)], "score": float(rng.uniform(0.05, 0.9))}
            if with_masks:
                mask = np.zeros((height, width), np.uint8)
                mask[int(y):int(y + h), int(x):int(x + w)] = 1
                det["segmentation"] = _encode(mask)
            detections.append(det)
    return detections


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle
