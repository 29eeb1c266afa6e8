"""The audit's checks of one COCO image: the file, its size and pixel mode, then its annotations."""

from __future__ import annotations

import io as _bytes_io
import json
import os
from typing import Any, Iterable

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data import coco
from tfmaskrcnn.data.audit_geometry import coco_annotation_object, object_checks
from tfmaskrcnn.data.audit_stats import AnchorCheck, ImageResult, Sample
from tfmaskrcnn.data.convert import ordered_parallel_map
from tfmaskrcnn.data.images import _KEPT_FORMATS, _MODE_REASONS, UnsupportedImageMode
from tfmaskrcnn.data.label_map import LabelMap


def check_coco_image(
    entry: coco.ImageEntry, images_dir: str, label_map: LabelMap, anchor: AnchorCheck | None = None
) -> ImageResult:
    """The converter's image and annotation checks on one image, plus the audit's own. Thread-safe."""
    from PIL import Image

    hits: list = []
    result = ImageResult(entry.image_id, entry.file_name, False, [], hits, entry.image_id)

    def skip_image(reason: str, message: str) -> ImageResult:
        hits.append((reason, entry.image_id, None, f"{entry.file_name}: {message}"))
        hits.extend(("annotation_of_skipped_image", entry.image_id, a["id"], reason) for a in entry.annotations)
        return result

    path = io.join(images_dir, entry.file_name)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return skip_image("image_missing", f"{path} does not exist")
    try:
        width, height, reasons = probe_image(raw)
    except UnsupportedImageMode as error:
        return skip_image("image_unsupported_mode", str(error))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return skip_image("image_corrupt", f"cannot be decoded ({error})")
    if entry.width is None or entry.height is None:
        hits.append(("image_size_missing", entry.image_id, None, f"real size {width}x{height} used"))
    elif (entry.width, entry.height) != (width, height):
        return skip_image("image_size_mismatch", f"file is {width}x{height}, JSON says {entry.width}x{entry.height}")
    for reason in reasons:
        hits.append((reason, entry.image_id, None, entry.file_name))
    result.usable = True
    for annotation in entry.annotations:
        obj, annotation_hits = coco_annotation_object(annotation, height, width, label_map)
        hits.extend((check, entry.image_id, annotation["id"], message) for check, message in annotation_hits)
        if obj is not None:
            result.objects.append(obj)
    hits.extend(
        object_checks(entry.image_id, height, width, result.objects, label_map.names, anchor, len(entry.annotations))
    )
    return result


def probe_image(raw: bytes) -> tuple[int, int, list[str]]:
    """(width, height, conversion reasons) of image bytes; raises as `images.decode_to_rgb` does.

    The pixels are decoded (so that a truncated or damaged file fails), JPEGs at 1/8 scale.
    """
    from PIL import Image

    with Image.open(_bytes_io.BytesIO(raw)) as image:
        width, height = image.size
        reasons = [] if image.format in _KEPT_FORMATS else ["format_converted"]
        if image.mode not in _MODE_REASONS:
            raise UnsupportedImageMode(
                f"pixel mode {image.mode!r} has no defined conversion to 8-bit RGB; convert the file to RGB JPEG or PNG"
            )
        if _MODE_REASONS[image.mode]:
            reasons.append(_MODE_REASONS[image.mode])
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        image.load()
    return width, height, reasons


def coco_sample(entry: coco.ImageEntry, images_dir: str, label_map: LabelMap) -> Sample:
    """Pixels and ground truth of one image, through the converter's own reader."""
    from tfmaskrcnn.data.images import decode_to_rgb

    record, _ = coco.load_image_record(entry, images_dir, label_map)
    if record is None:
        raise ValueError(f"image {entry.image_id} cannot be read")
    pixels, _, _ = decode_to_rgb(record.encoded)
    instances = record.instances
    return Sample(
        image=pixels,
        boxes=np.array([i.box for i in instances], dtype=np.float64).reshape(-1, 4),
        class_ids=np.array([i.class_id for i in instances], dtype=np.int64),
        masks=[i.mask for i in instances],
        is_crowd=np.array([i.is_crowd for i in instances], dtype=bool),
    )


def run_parallel(fn, items, workers, progress, desc) -> Iterable:
    from tqdm import tqdm

    total = len(items) if isinstance(items, (list, tuple)) else None
    workers = workers or min(8, os.cpu_count() or 1)
    with tqdm(total=total, unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for result in ordered_parallel_map(fn, items, workers):
            bar.update(1)
            yield result


def read_json(path: str) -> tuple[Any, str | None]:
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None, f"{path} not found"
    try:
        return json.loads(raw), None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"{path} is not valid JSON: {error}"


def read_bytes(path: str) -> bytes:
    if io.is_url(path):
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(path) from None
    with open(path, "rb") as f:
        return f.read()


def first_sentence(message: str) -> str:
    return message.split("; ")[0]
