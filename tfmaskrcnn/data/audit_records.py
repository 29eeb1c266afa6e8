"""The audit of converted TFRecords: each tf.Example in the converter's layout against label_map.json."""

from __future__ import annotations

import collections
import io as _bytes_io
import time
from typing import Iterable

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data.audit_checks import Collector
from tfmaskrcnn.data.audit_geometry import fmt_box, object_checks
from tfmaskrcnn.data.audit_images import probe_image, run_parallel
from tfmaskrcnn.data.audit_stats import (
    AnchorCheck,
    AuditObject,
    AuditResult,
    ImageResult,
    Sample,
    aggregate,
    settings_of,
)
from tfmaskrcnn.data.label_map import LabelMap


def audit_records(
    data: str,
    anchor: AnchorCheck | None = None,
    workers: int | None = None,
    progress: bool = True,
    samples_per_class: int = 4,
) -> AuditResult:
    """Audits converted TFRecords: a converter output folder or a glob, with label_map.json beside them."""
    import tensorflow as tf

    from tfmaskrcnn.data.stats import data_directory, find_tfrecords

    start = time.perf_counter()
    hits = Collector()
    files = find_tfrecords(data)
    if not files:
        raise FileNotFoundError(f"{data}: no TFRecord files; give the output folder of `tfmaskrcnn convert` or a glob")
    label_map_path = io.join(data_directory(data), io.LABEL_MAP_FILENAME)
    label_map = None
    if tf.io.gfile.exists(label_map_path):
        try:
            label_map = LabelMap.load(label_map_path)
        except ValueError as error:
            hits.add("label_map_missing", message=str(error))
    else:
        hits.add("label_map_missing", message=f"{label_map_path} not found")
    source = {"records": data, "files": [io.basename(f) for f in files], "label_map": label_map_path}
    names = list(label_map.names) if label_map else []
    serialized_samples: dict = {}

    def records() -> Iterable[tuple[str, int, bytes]]:
        for path in files:
            for n, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                yield path, n, record

    def check(item) -> ImageResult:
        path, n, record = item
        result = check_record(record, label_map, anchor, key=(io.basename(path), n))
        result.serialized = record  # kept only while aggregating (for samples)
        return result

    taken: collections.Counter = collections.Counter()
    num_records = 0

    def keep_samples(results):
        # Keeps the bytes of the records `aggregate` will pick as samples (the first usable ones per class).
        nonlocal num_records
        seen: set = set()
        for result in results:
            num_records += 1
            if result.usable and result.image_id in seen:
                # Evaluation keys the ground truth by source_id: a second record with it is lost or mixed in.
                hits.add(
                    "duplicate_image_id", result.image_id, None, f"record {result.sample_key} reuses its source_id"
                )
            seen.add(result.image_id)
            classes = {o.class_id for o in result.objects if not o.is_crowd}
            if result.usable and any(taken[c] < samples_per_class for c in classes):
                taken.update(classes)
                serialized_samples[result.sample_key] = result.serialized
            result.serialized = None
            yield result

    results = list(keep_samples(run_parallel(check, records(), workers, progress, "audit records")))
    max_label = max((o.class_id for r in results for o in r.objects), default=0)
    if label_map is None:
        names = [f"label {i}" for i in range(1, max_label + 1)]
    result = aggregate(
        "records",
        source,
        names,
        results,
        hits,
        settings_of(anchor),
        anchor,
        num_images=num_records,
        num_annotations=sum(len(r.objects) + r.dropped for r in results),
        samples_per_class=samples_per_class,
    )
    wanted = {k for keys in result.samples.values() for k in keys}
    kept = {k: v for k, v in serialized_samples.items() if k in wanted}
    result.load_sample = lambda key: record_sample(kept[key])
    result.seconds = time.perf_counter() - start
    return result


def _feature(features, key: str, kind: str) -> list:
    if key not in features:
        return []
    return list(getattr(features[key], kind).value)


def check_record(serialized: bytes, label_map: LabelMap | None, anchor: AnchorCheck | None, key=None) -> ImageResult:
    """The checks of one serialized tf.Example in the converter's layout. Thread-safe."""
    import tensorflow as tf
    from PIL import Image

    hits: list = []
    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except Exception as error:  # noqa: BLE001 - protobuf raises its own DecodeError
        return ImageResult(key, "", False, [], [("record_invalid", key, None, f"not a tf.Example ({error})")], key)
    source_id = b"".join(_feature(features, "image/source_id", "bytes_list")).decode("utf-8", "replace")
    image_id = source_id or (f"{key[0]}#{key[1]}" if key else "?")
    file_name = b"".join(_feature(features, "image/filename", "bytes_list")).decode("utf-8", "replace")
    result = ImageResult(image_id, file_name, False, [], hits, key)
    encoded = _feature(features, "image/encoded", "bytes_list")
    if not encoded:
        hits.append(("record_invalid", image_id, None, f"record {key}: no image/encoded"))
        return result
    if not source_id.isdigit():
        hits.append(("record_source_id_not_numeric", image_id, None, f"record {key}: source_id {source_id!r}"))
    try:
        width, height, _ = probe_image(encoded[0])
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        hits.append(("record_image_unreadable", image_id, None, f"record {key}: {error}"))
        return result
    stated = (_feature(features, "image/height", "int64_list")[:1], _feature(features, "image/width", "int64_list")[:1])
    if stated != ([height], [width]):
        hits.append(
            ("record_size_mismatch", image_id, None, f"image is {width}x{height}, record says {stated[1]}x{stated[0]}")
        )
    result.usable = True
    coords = [
        np.asarray(_feature(features, f"image/object/bbox/{k}", "float_list"), dtype=np.float64)
        for k in ("xmin", "ymin", "xmax", "ymax")
    ]
    labels = _feature(features, "image/object/class/label", "int64_list")
    texts = [t.decode("utf-8", "replace") for t in _feature(features, "image/object/class/text", "bytes_list")]
    crowd = _feature(features, "image/object/is_crowd", "int64_list")
    annotation_ids = _feature(features, "image/object/annotation_id", "int64_list")
    masks = _feature(features, "image/object/mask", "bytes_list")
    count = len(labels)
    lengths = {len(c) for c in coords} | {count} | ({len(masks)} if masks else set())
    if len(lengths) > 1:
        hits.append(
            (
                "record_object_count_mismatch",
                image_id,
                None,
                f"{len(coords[0])} boxes, {count} labels, {len(masks)} masks",
            )
        )
        return result
    if count and max(float(np.max(np.abs(c))) for c in coords) > 1.5:
        hits.append(
            ("record_box_not_normalized", image_id, None, f"largest coordinate {max(float(c.max()) for c in coords):g}")
        )
        return result
    num_classes = label_map.num_classes if label_map else None
    for i in range(count):
        annotation_id = annotation_ids[i] if i < len(annotation_ids) else None
        label = int(labels[i])
        if num_classes is not None and not 1 <= label <= num_classes:
            hits.append(
                ("record_label_out_of_range", image_id, annotation_id, f"label {label}, label map has 1..{num_classes}")
            )
        elif label_map is not None and i < len(texts) and texts[i] and texts[i] != label_map.name(label):
            hits.append(
                (
                    "record_class_text_mismatch",
                    image_id,
                    annotation_id,
                    f"label {label} is {label_map.name(label)!r} in the label map but {texts[i]!r} in the record",
                )
            )
        x0, y0, x1, y1 = (float(c[i]) for c in coords)
        if min(x0, y0) < -1e-3 or max(x1, y1) > 1 + 1e-3:
            hits.append(
                ("box_out_of_bounds_clipped", image_id, annotation_id, f"normalised box {fmt_box((x0, y0, x1, y1))}")
            )
        x0, x1 = np.clip([x0, x1], 0, 1) * width
        y0, y1 = np.clip([y0, y1], 0, 1) * height
        if x1 - x0 < 1 or y1 - y0 < 1:
            hits.append(("box_degenerate", image_id, annotation_id, f"box {fmt_box((x0, y0, x1, y1))} px"))
            continue
        rle = None
        if masks:
            rle, mask_hit = _check_mask(masks[i], height, width)
            if mask_hit:
                hits.append((mask_hit[0], image_id, annotation_id, mask_hit[1]))
                if mask_hit[0] != "record_mask_values":
                    continue
        result.objects.append(
            AuditObject(annotation_id, label, bool(crowd[i]) if i < len(crowd) else False, (x0, y0, x1, y1), rle)
        )
    result.dropped = count - len(result.objects)
    names = list(label_map.names) if label_map else []
    hits.extend(object_checks(image_id, height, width, result.objects, names, anchor, count))
    return result


def _check_mask(png: bytes, height: int, width: int):
    """(RLE of the mask > 0, None) or (maybe RLE, (check, message)) for one PNG instance mask."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    try:
        with Image.open(_bytes_io.BytesIO(png)) as image:
            mask = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        return None, ("record_image_unreadable", f"instance mask cannot be decoded ({error})")
    if mask.ndim != 2 or mask.shape != (height, width):
        return None, ("record_size_mismatch", f"mask {mask.shape} for an image of {height}x{width}")
    binary = (mask > 0).astype(np.uint8)
    if not binary.any():
        return None, ("mask_empty", "instance mask has no pixel set")
    rle = mask_utils.encode(np.asfortranarray(binary))
    if mask.max() > 1:
        values = np.unique(mask)
        shown = ", ".join(str(int(v)) for v in values[:5]) + (", ..." if values.size > 5 else "")
        return rle, ("record_mask_values", f"mask values {{{shown}}}, expected {{0, 1}}")
    return rle, None


def record_sample(serialized: bytes) -> Sample:
    """Pixels and ground truth of one record, for the sample grids."""
    import tensorflow as tf
    from PIL import Image

    features = tf.train.Example.FromString(serialized).features.feature
    with Image.open(_bytes_io.BytesIO(_feature(features, "image/encoded", "bytes_list")[0])) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    coords = [
        np.asarray(_feature(features, f"image/object/bbox/{k}", "float_list")) for k in ("xmin", "ymin", "xmax", "ymax")
    ]
    boxes = (
        np.stack(coords, axis=1).reshape(-1, 4) * [width, height, width, height] if coords[0].size else np.zeros((0, 4))
    )
    masks = []
    for png in _feature(features, "image/object/mask", "bytes_list"):
        with Image.open(_bytes_io.BytesIO(png)) as image:
            masks.append(np.asarray(image))
    labels = np.asarray(_feature(features, "image/object/class/label", "int64_list"), dtype=np.int64)
    crowd = np.asarray(_feature(features, "image/object/is_crowd", "int64_list"), dtype=bool)
    if crowd.size != labels.size:
        crowd = np.zeros(labels.size, dtype=bool)
    return Sample(pixels, boxes, labels, masks, crowd)
