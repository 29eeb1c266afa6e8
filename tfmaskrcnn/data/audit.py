"""Dataset audit: the label, mask and file mistakes that break training or make one-class models.

    tfmaskrcnn audit --annotations instances_train.json --images train/ --output audit_out
    tfmaskrcnn audit converted_records_dir --output audit_out

`audit_coco` checks a COCO instances dataset (JSON and image files), `audit_records` the
TFRecords written by `tfmaskrcnn convert` (or by another tool). Both return an
`AuditResult`: the class histogram and a list of `Finding`s, one per check that fired,
each with a severity, a count, example image / annotation ids and the fix. The report
files (audit.json, PNGs, report.html) are written by `diagnostics.audit_report`.

The COCO checks are the converter's own (`coco.parse_coco` for the JSON,
`coco_geometry.clip_coco_box` / `segmentation_to_mask` for boxes and masks, the image
modes of `images`), so everything `tfmaskrcnn convert` would skip, convert or fix is
found here under the same reason name. Two shortcuts keep the pass fast without changing
a verdict: a JPEG is decoded at 1/8 scale (libjpeg still reads the whole stream, so a
truncated file fails the same way), and a well-formed polygon is turned into a COCO RLE
(exactly what `segmentation_to_mask` rasterises) whose area and extent are read without
drawing the full-size mask; anything else goes through `segmentation_to_mask` itself.

Severities. error: breaks training or teaches a one-class / wrong-class model (category
id 0 or unknown ids, duplicate category ids or names, >= 95% of the instances in one
class, conflicting labels on more than 1% of the instances, more than half of the images
or annotations unusable, a validation split with other categories; in records: 0/255
masks, labels outside the label map, names that disagree with it, undecodable records,
repeated source ids). warning: data lost or degraded that training survives (missing or
unreadable images, file names outside the image folder, degenerate or clipped boxes,
masks that disagree with their box or are empty, duplicates, a few conflicting labels,
80-95% in one class, classes without instances, classes mostly below the smallest
anchor). info: what a user should know but need not fix (crowd regions, images without
objects, id gaps, conversions, imbalance, a few small objects).

The checks live in modules of one concern: `audit_checks` (the vocabulary: checks,
severities, findings), `audit_labels` (category ids and names), `audit_images` (image
files), `audit_geometry` (boxes and masks), `audit_stats` (class counts and the dataset-wide
findings) and `audit_records` (converted TFRecords); this module runs them on a COCO
dataset and keeps the public names in one place.

Pure functions over the COCO dict and the parsed records; files are read with plain
`open` locally and `tf.io.gfile` for URLs. Images are checked in a thread pool (image
decoding releases the GIL) with a tqdm progress bar.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Sequence

from tfmaskrcnn.data import coco
from tfmaskrcnn.data.audit_checks import (  # noqa: F401  (public names of the audit)
    CHECKS,
    CONFLICT_ERROR_SHARE,
    DOMINANT_ERROR,
    DOMINANT_WARNING,
    DUPLICATE_IOU,
    ERROR,
    FAIL_ON,
    IMBALANCE_INFO,
    INFO,
    MASK_BOX_MIN_IOU,
    MAX_EXAMPLES,
    MOST,
    SEVERITIES,
    SMALL_CLASS_SHARE,
    WARNING,
    Collector,
    Finding,
)
from tfmaskrcnn.data.audit_geometry import coco_annotation_object, object_checks  # noqa: F401
from tfmaskrcnn.data.audit_images import (  # noqa: F401
    check_coco_image,
    coco_sample,
    first_sentence,
    probe_image,
    read_json,
    run_parallel,
)
from tfmaskrcnn.data.audit_labels import check_categories, check_category_plan, compare_categories  # noqa: F401
from tfmaskrcnn.data.audit_records import audit_records, check_record, record_sample  # noqa: F401
from tfmaskrcnn.data.audit_stats import (  # noqa: F401
    AnchorCheck,
    AuditObject,
    AuditResult,
    ImageResult,
    Sample,
    aggregate,
    empty_result,
    settings_of,
)
from tfmaskrcnn.data.categories import CategoryOptions
from tfmaskrcnn.data.coco_geometry import is_int


def audit_coco(
    annotations_path: str,
    images_dir: str,
    val_annotations_path: str | None = None,
    anchor: AnchorCheck | None = None,
    workers: int | None = None,
    progress: bool = True,
    samples_per_class: int = 4,
    categories: CategoryOptions | None = None,
    crowd: str = "keep",
) -> AuditResult:
    """Audits a COCO instances JSON and its image folder (see the module docstring).

    `categories` and `crowd` are the options of `tfmaskrcnn convert` (see `coco.parse_coco`): the
    audit sees the classes and crowd regions the conversion with the same options would write.
    """
    start = time.perf_counter()
    data, error = read_json(annotations_path)
    val_data, val_error = (None, None)
    if val_annotations_path:
        val_data, val_error = read_json(val_annotations_path)
    result = audit_coco_dict(
        data if error is None else None,
        images_dir,
        source={"annotations": annotations_path, "images": images_dir, "val_annotations": val_annotations_path},
        val_data=val_data if val_error is None else None,
        anchor=anchor,
        workers=workers,
        progress=progress,
        samples_per_class=samples_per_class,
        read_errors=[e for e in (error, val_error) if e],
        categories=categories,
        crowd=crowd,
    )
    result.seconds = time.perf_counter() - start
    return result


def audit_coco_dict(
    data: Any,
    images_dir: str,
    source: dict | None = None,
    val_data: Any = None,
    anchor: AnchorCheck | None = None,
    workers: int | None = None,
    progress: bool = True,
    samples_per_class: int = 4,
    read_errors: Sequence[str] = (),
    categories: CategoryOptions | None = None,
    crowd: str = "keep",
) -> AuditResult:
    """Audits an already-parsed COCO dict against the images under `images_dir`; options as `audit_coco`."""
    start = time.perf_counter()
    hits = Collector()
    source = dict(source or {"annotations": "<memory>", "images": images_dir})
    for message in read_errors:
        hits.add("coco_format", message=message)
    settings = settings_of(anchor) | {"crowd": crowd}
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        if data is not None:
            hits.add("coco_format", message='top level must be an object with "images", "annotations", "categories"')
        return empty_result("coco", source, hits, settings, start)
    usable_categories = check_categories(data.get("categories"), hits)
    if val_data is not None:
        if isinstance(val_data, dict) and isinstance(val_data.get("categories"), list):
            differences = compare_categories(data.get("categories") or [], val_data["categories"])
            for difference in differences:
                hits.add("val_categories_differ", message=difference)
        else:
            hits.add("val_categories_differ", message='the validation file has no "categories" list')
    if not usable_categories:
        return empty_result("coco", source, hits, settings, start)
    try:
        dataset = coco.parse_coco(
            {**data, "categories": usable_categories},
            source.get("annotations", "<memory>"),
            categories=categories,
            crowd=crowd,
            refuse_duplicate_image_ids=False,  # reported below, with every other finding
        )
    except coco.CocoFormatError as error:
        hits.add("category_options", message=str(error))
        return empty_result("coco", source, hits, settings, start)
    check_category_plan(dataset.plan, hits)
    label_map = dataset.label_map
    for issue in dataset.issues:
        hits.add(issue.reason, issue.image_id, issue.annotation_id, first_sentence(issue.message))
    entries = {e.image_id: e for e in dataset.images}

    def check(entry: coco.ImageEntry) -> ImageResult:
        return check_coco_image(entry, images_dir, label_map, anchor)

    results = run_parallel(check, dataset.images, workers, progress, "audit images")
    result = aggregate(
        "coco",
        source,
        list(label_map.names),
        results,
        hits,
        settings,
        anchor,
        num_images=dataset.num_images_in,
        num_annotations=dataset.num_annotations_in,
        samples_per_class=samples_per_class,
        crowd_left_out=_crowd_per_class(data["annotations"], dataset.plan.class_of) if crowd == "skip" else None,
    )
    result.load_sample = lambda image_id: coco_sample(entries[image_id], images_dir, label_map)
    result.seconds = time.perf_counter() - start
    return result


def _crowd_per_class(annotations: Sequence[Any], class_of: dict) -> dict[int, int]:
    """Class id -> iscrowd=1 annotations of it (those `--crowd skip` leaves out before any image is read)."""
    counts: collections.Counter = collections.Counter()
    for annotation in annotations:
        if isinstance(annotation, dict) and annotation.get("iscrowd") and is_int(annotation.get("category_id")):
            class_id = class_of.get(annotation["category_id"])
            if class_id is not None:
                counts[class_id] += 1
    return dict(counts)
