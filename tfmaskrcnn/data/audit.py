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

Pure functions over the COCO dict and the parsed records; files are read with plain
`open` locally and `tf.io.gfile` for URLs. Images are checked in a thread pool (image
decoding releases the GIL) with a tqdm progress bar.
"""

from __future__ import annotations

import collections
import dataclasses
import io as _bytes_io
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data import coco
from tfmaskrcnn.data.coco_geometry import clip_coco_box, is_int, segmentation_to_mask
from tfmaskrcnn.data.convert import ordered_parallel_map
from tfmaskrcnn.data.images import _KEPT_FORMATS, _MODE_REASONS, UnsupportedImageMode
from tfmaskrcnn.data.label_map import LabelMap

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

DUPLICATE_IOU = 0.95  # same image, box and mask IoU above this: one object annotated twice
MASK_BOX_MIN_IOU = 0.5  # the mask's extent against its box below this: they describe different things
DOMINANT_ERROR = 0.95  # one class with this share of all instances while several are declared
DOMINANT_WARNING = 0.8
IMBALANCE_INFO = 10.0  # most / least frequent class (among those with instances)
CONFLICT_ERROR_SHARE = 0.01  # conflicting pairs above this share of the instances: systematic, an error
MOST = 0.5  # more than this share of the images or annotations unusable is an error
SMALL_CLASS_SHARE = 0.5  # a class with this share of its instances below the smallest anchor: warning
MAX_EXAMPLES = 10
_NUMBER = (int, float)

# check -> (severity, what it means, the fix). Converter reasons keep their names.
CHECKS: dict[str, tuple[str, str, str]] = {
    # the file as a whole and the categories
    "coco_format": (ERROR, "the annotation file cannot be read as COCO instances", "write a COCO instances JSON"),
    "category_invalid": (
        ERROR,
        "category entry without an integer id and a name",
        'give every category "id" and "name"',
    ),
    "category_id_zero_declared": (
        ERROR,
        "a category uses id 0, which Mask R-CNN reserves for background",
        "renumber the categories from 1 (add 1 to every category id and every annotation's category_id)",
    ),
    "duplicate_category_id": (ERROR, "two categories share one id", "give every category a unique id"),
    "duplicate_category_name": (
        ERROR,
        "two categories share one name: the model cannot tell them apart by name and metrics keyed by name collide",
        "merge the categories (and their annotations) or rename one",
    ),
    "category_id_gaps": (
        INFO,
        "category ids are not contiguous 1..K",
        "nothing to do: the converter maps them to 1..K and writes label_map.json; at inference use that file, "
        "never a hand-typed class list",
    ),
    # converter reasons: images
    "image_record_invalid": (
        ERROR,
        coco.REASONS["image_record_invalid"][1],
        'give every image an integer "id" and a "file_name"',
    ),
    "duplicate_image_id": (ERROR, coco.REASONS["duplicate_image_id"][1], "give every image a unique id"),
    "file_name_escapes_image_dir": (
        WARNING,
        coco.REASONS["file_name_escapes_image_dir"][1],
        "write file_name relative to the --images folder",
    ),
    "image_missing": (WARNING, "image file not found on disk", "check --images and the file_name entries"),
    "image_corrupt": (
        WARNING,
        "image file cannot be decoded",
        "replace the file or remove the image and its annotations",
    ),
    "image_unsupported_mode": (
        WARNING,
        coco.REASONS["image_unsupported_mode"][1],
        "convert the file to RGB JPEG or PNG",
    ),
    "image_size_mismatch": (
        WARNING,
        coco.REASONS["image_size_mismatch"][1],
        "the annotations were drawn on another raster (EXIF rotation, resized copy): fix the image or the JSON",
    ),
    "image_size_missing": (INFO, coco.REASONS["image_size_missing"][1], "add width/height to the image entries"),
    # converter reasons: annotations
    "annotation_record_invalid": (
        ERROR,
        coco.REASONS["annotation_record_invalid"][1],
        'give every annotation integer "id", "image_id" and "category_id"',
    ),
    "duplicate_annotation_id": (
        WARNING,
        coco.REASONS["duplicate_annotation_id"][1],
        "give every annotation a unique id",
    ),
    "annotation_unknown_image": (
        WARNING,
        "annotation whose image does not exist in the JSON",
        "fix the image_id or add the image entry",
    ),
    "annotation_of_skipped_image": (
        INFO,
        coco.REASONS["annotation_of_skipped_image"][1],
        "fix the image (see its finding)",
    ),
    "category_id_zero": (
        ERROR,
        "annotation with category_id 0 (background): ids shifted by one?",
        "use the id of a real category (labels are 1..K; 0 is background)",
    ),
    "annotation_unknown_category": (
        ERROR,
        "annotation whose category_id is not among the categories",
        "add the category or fix the id (ids shifted or taken from another label list?)",
    ),
    "box_invalid": (WARNING, coco.REASONS["box_invalid"][1], "write bbox as [x, y, width, height] in pixels"),
    "box_degenerate": (
        WARNING,
        coco.REASONS["box_degenerate"][1],
        "write bbox as [x, y, width, height] (not [x1, y1, x2, y2]), at least 1 px inside the image",
    ),
    "box_out_of_bounds_clipped": (
        WARNING,
        "box outside the image (the converter clips it)",
        "clip the box to the image, or check the image size and the box format",
    ),
    "segmentation_missing": (WARNING, coco.REASONS["segmentation_missing"][1], "add a polygon or RLE mask"),
    "segmentation_invalid": (WARNING, coco.REASONS["segmentation_invalid"][1], "fix the polygon or RLE"),
    "polygon_too_few_points": (WARNING, coco.REASONS["polygon_too_few_points"][1], "fix or drop the polygon"),
    "polygon_part_dropped": (INFO, coco.REASONS["polygon_part_dropped"][1], "drop polygon parts with under 3 points"),
    "mask_empty": (WARNING, "mask with no pixel inside the image", "fix the segmentation or drop the annotation"),
    **{
        r: (INFO, coco.REASONS[r][1], "nothing to do: the converter converts it")
        for r in coco.REASONS
        if r.endswith("_converted")
    },
    # checks beyond the converter's
    "mask_box_mismatch": (
        WARNING,
        f"mask whose extent disagrees with its box (IoU < {MASK_BOX_MIN_IOU})",
        "regenerate the box from the mask, or fix the mask (another object's mask, or a shifted one)",
    ),
    "duplicate_annotation": (
        WARNING,
        f"one object annotated twice with the same class (box and mask IoU > {DUPLICATE_IOU})",
        "remove the duplicate",
    ),
    "conflicting_labels": (
        WARNING,
        f"one object annotated with two classes (box and mask IoU > {DUPLICATE_IOU}): the model learns they are one",
        "keep the right class and delete the other annotation",
    ),
    "images_without_annotations": (
        INFO,
        "image without any usable object (trained as a negative example)",
        "nothing to do if intended; otherwise annotate it",
    ),
    "crowd_only_images": (
        INFO,
        "image whose only annotations are crowd regions (no object to learn from)",
        "nothing to do if intended",
    ),
    "crowd_annotations": (
        INFO,
        "crowd region (iscrowd=1, usually an RLE): not trained on (Model Garden skips crowd in training), "
        "ignored by COCO evaluation",
        "nothing to do",
    ),
    "small_objects": (
        INFO,
        "object smaller than the smallest anchor of the experiment at its input size",
        "use a smaller anchor_size or min_level, or a larger input_size",
    ),
    "one_class_dominates": (
        ERROR,
        "all or nearly all instances are in one class while several are declared",
        "check the category_id written by your export (every instance with one id?); if real, collect more of "
        "the other classes",
    ),
    "classes_without_instances": (
        WARNING,
        "declared class with no instance: the model cannot learn it",
        "add examples, or remove the class from the categories",
    ),
    "class_imbalance": (
        INFO,
        f"most / least frequent class over {IMBALANCE_INFO:g}",
        "see `tfmaskrcnn stats` for class weights and repeat factors (losses.class_weights, repeat-factor sampling)",
    ),
    "no_instances": (ERROR, "no usable instance in the whole dataset", "fix the findings above"),
    "most_images_unusable": (
        ERROR,
        f"more than {MOST:.0%} of the images are missing or unreadable",
        "check the --images folder and the file_name entries",
    ),
    "most_annotations_unusable": (
        ERROR,
        f"more than {MOST:.0%} of the annotations cannot be used",
        "fix the findings above (box format, category ids, masks)",
    ),
    "val_categories_differ": (
        ERROR,
        "the validation split's categories differ from the training split's",
        "export both splits with one category list (same ids, same names)",
    ),
    # records
    "label_map_missing": (
        ERROR,
        "no label_map.json beside the records: training cannot name or count the classes",
        "convert with `tfmaskrcnn convert`, which writes it",
    ),
    "record_invalid": (ERROR, "record is not a detection tf.Example", "write the records with `tfmaskrcnn convert`"),
    "record_source_id_not_numeric": (
        ERROR,
        "image/source_id is not a numeric string (Model Garden's evaluator needs one)",
        "write the COCO image id as image/source_id",
    ),
    "record_image_unreadable": (ERROR, "image/encoded cannot be decoded: training stops on it", "re-convert the image"),
    "record_size_mismatch": (
        ERROR,
        "image/height, image/width or a mask differ from the decoded image",
        "re-convert: masks and boxes are placed with these sizes",
    ),
    "record_object_count_mismatch": (
        ERROR,
        "boxes, labels and masks of a record differ in number",
        "re-convert: the decoder pairs them by position",
    ),
    "record_label_out_of_range": (
        ERROR,
        "class label outside 1..K of label_map.json (0 is background): label map and class ids disagree",
        "convert again with one label map, or fix num_classes / the label map",
    ),
    "record_class_text_mismatch": (
        ERROR,
        "image/object/class/text differs from the label map's name for the label: classes shifted or reordered",
        "convert again so that labels and label_map.json come from one category list",
    ),
    "record_mask_values": (
        ERROR,
        "instance mask PNG with values other than 0/1 (0/255 masks make the mask loss negative: garbage training)",
        "write masks with values 0/1 (`tfmaskrcnn convert` does)",
    ),
    "record_box_not_normalized": (
        ERROR,
        "boxes far outside [0, 1]: pixel coordinates where the decoder expects normalised ones",
        "divide box coordinates by the image width/height",
    ),
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check that fired, over the whole dataset."""

    check: str
    severity: str
    count: int  # cases (annotations, images, classes or pairs)
    message: str  # what, with example ids
    fix: str
    image_ids: tuple = ()  # examples
    annotation_ids: tuple = ()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "image_ids": list(self.image_ids),
            "annotation_ids": list(self.annotation_ids),
        }

    def __str__(self) -> str:
        return f"[{self.severity.upper()}] {self.check}: {self.message}\n    fix: {self.fix}"


@dataclasses.dataclass(frozen=True)
class AnchorCheck:
    """The smallest anchor of an experiment, in pixels of the model input, and that input's size."""

    experiment: str
    smallest_anchor: float
    input_size: tuple[int, int] | None = None  # (height, width); None: images are used at their own size

    def scale(self, height: int, width: int) -> float:
        """Model Garden's resize: keep the aspect ratio, fit inside the input size."""
        if not self.input_size:
            return 1.0
        return min(self.input_size[0] / height, self.input_size[1] / width)


@dataclasses.dataclass
class AuditObject:
    annotation_id: int | None
    class_id: int  # contiguous 1..K; may be out of range in records (then reported)
    is_crowd: bool
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    rle: Any = None  # pycocotools RLE of the mask, when there is one


@dataclasses.dataclass
class Sample:
    """One image with its ground truth, for the sample grids."""

    image: np.ndarray  # uint8 [H, W, 3]
    boxes: np.ndarray  # [N, 4] xmin, ymin, xmax, ymax pixels
    class_ids: np.ndarray  # [N]
    masks: list  # N uint8 [H, W] (values as stored)
    is_crowd: np.ndarray  # [N] bool


@dataclasses.dataclass
class _ImageResult:
    image_id: Any
    file_name: str
    usable: bool  # the image itself can be trained on
    objects: list
    hits: list  # (check, image_id, annotation_id, message)
    sample_key: Any = None
    dropped: int = 0  # objects of a record left out by its checks
    serialized: bytes | None = None  # a record's bytes, while it may become a sample


@dataclasses.dataclass
class AuditResult:
    mode: str  # "coco" or "records"
    source: dict
    names: list[str]
    num_images: int
    num_annotations: int
    num_usable_images: int
    num_usable_annotations: int
    num_crowd: int
    instances: np.ndarray  # [K] non-crowd instances per class
    images_per_class: np.ndarray  # [K]
    findings: list[Finding]
    samples: dict[int, list]  # class id -> sample keys
    settings: dict
    seconds: float = 0.0
    load_sample: Callable[[Any], Sample] | None = None

    @property
    def counts(self) -> dict[str, int]:
        c = collections.Counter(f.severity for f in self.findings)
        return {s: c[s] for s in SEVERITIES}

    @property
    def exit_code(self) -> int:
        return 1 if self.counts[ERROR] else 0

    @property
    def imbalance_ratio(self) -> float | None:
        present = self.instances[self.instances > 0]
        return float(present.max() / present.min()) if present.size else None

    def finding(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def histogram(self) -> list[dict]:
        total = max(int(self.instances.sum()), 1)
        return [
            {
                "id": i + 1,
                "name": name,
                "instances": int(self.instances[i]),
                "images": int(self.images_per_class[i]),
                "share": float(self.instances[i] / total),
            }
            for i, name in enumerate(self.names)
        ]

    def to_json_dict(self) -> dict:
        ratio = self.imbalance_ratio
        return {
            "format": "tfmaskrcnn.audit",
            "version": 1,
            "mode": self.mode,
            "source": self.source,
            "verdict": "error" if self.counts[ERROR] else ("warning" if self.counts[WARNING] else "ok"),
            "counts": self.counts,
            "totals": {
                "images": self.num_images,
                "annotations": self.num_annotations,
                "usable_images": self.num_usable_images,
                "usable_annotations": self.num_usable_annotations,
                "crowd": self.num_crowd,
                "classes": len(self.names),
            },
            "imbalance_ratio": ratio,
            "classes": self.histogram(),
            "findings": [f.as_dict() for f in self.findings],
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.num_images / self.seconds, 1) if self.seconds > 0 else None,
        }

    def format_summary(self, max_classes: int = 10) -> str:
        c = self.counts
        lines = [
            f"audit of {self.source.get('annotations') or self.source.get('records')}: {self.num_images} images, "
            f"{self.num_annotations} annotations ({self.num_crowd} crowd), {len(self.names)} classes; "
            f"{self.num_usable_images} images and {self.num_usable_annotations} annotations usable",
        ]
        order = np.argsort(-self.instances, kind="stable")[:max_classes]
        total = max(int(self.instances.sum()), 1)
        shown = ", ".join(f"{self.names[i]} {int(self.instances[i])} ({self.instances[i] / total:.0%})" for i in order)
        ratio = self.imbalance_ratio
        lines.append(
            f"instances per class (top {len(order)}): {shown}"
            + (f"; imbalance ratio {ratio:.1f}" if ratio is not None else "")
        )
        for finding in self.findings:
            lines.append(str(finding))
        lines.append(
            f"{c[ERROR]} error(s), {c[WARNING]} warning(s), {c[INFO]} info in {self.seconds:.1f} s"
            + (f" ({self.num_images / self.seconds:.0f} images/s)" if self.seconds > 0 else "")
        )
        return "\n".join(lines)


class _Collector:
    """Groups hits by check: a count and the first examples of each."""

    def __init__(self) -> None:
        self.count: collections.Counter = collections.Counter()
        self.examples: dict[str, list] = collections.defaultdict(list)
        self.severity: dict[str, str] = {}
        self.summary: dict[str, str] = {}

    def add(self, check: str, image_id=None, annotation_id=None, message: str = "") -> None:
        if check not in CHECKS:
            raise KeyError(f"unknown audit check {check!r}")
        self.count[check] += 1
        if len(self.examples[check]) < MAX_EXAMPLES:
            self.examples[check].append((image_id, annotation_id, message))

    def findings(self) -> list[Finding]:
        result = []
        for check, count in self.count.items():
            severity, what, fix = CHECKS[check]
            examples = self.examples[check]
            shown = "; ".join(_where(i, a) + (f": {m}" if m else "") for i, a, m in examples[:5])
            more = f"; and {count - 5} more" if count > 5 else ""
            summary = self.summary.get(check, f"{count} case(s)")
            result.append(
                Finding(
                    check=check,
                    severity=self.severity.get(check, severity),
                    count=count,
                    message=f"{what}. {summary}" + (f", e.g. {shown}{more}" if shown else ""),
                    fix=fix,
                    image_ids=tuple(dict.fromkeys(i for i, _, _ in examples if i is not None)),
                    annotation_ids=tuple(a for _, a, _ in examples if a is not None),
                )
            )
        result.sort(key=lambda f: (_RANK[f.severity], f.check))
        return result


def _where(image_id, annotation_id) -> str:
    parts = []
    if image_id is not None:
        parts.append(f"image {image_id}")
    if annotation_id is not None:
        parts.append(f"annotation {annotation_id}")
    return " ".join(parts) or "dataset"


# ---------------------------------------------------------------------------------------------
# COCO JSON + images


def check_categories(categories: Any, hits: _Collector) -> list[dict]:
    """Category checks; returns the usable categories (duplicated names made unique, so annotations keep a class)."""
    if not isinstance(categories, list) or not categories:
        hits.add("coco_format", message='"categories" must be a non-empty list')
        return []
    usable, ids, names = [], set(), {}
    for position, category in enumerate(categories):
        coco_id = category.get("id") if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if not is_int(coco_id) or coco_id < 0 or not isinstance(name, str) or not name.strip():
            hits.add("category_invalid", message=f"categories[{position}] = {category!r}")
            continue
        if coco_id == 0:
            hits.add("category_id_zero_declared", message=f"category {name!r} has id 0")
            continue
        if coco_id in ids:
            hits.add("duplicate_category_id", message=f"id {coco_id} is used by {name!r} and an earlier category")
            continue
        ids.add(coco_id)
        if name in names:
            hits.add("duplicate_category_name", message=f"{name!r} is category {names[name]} and category {coco_id}")
            name = f"{name} (id {coco_id})"
        names.setdefault(name, coco_id)
        usable.append({"id": coco_id, "name": name})
    if usable:
        sorted_ids = sorted(ids)
        missing = sorted(set(range(1, sorted_ids[-1] + 1)) - ids)
        if missing:
            hits.add(
                "category_id_gaps",
                message=f"{len(usable)} categories with ids {sorted_ids[0]}..{sorted_ids[-1]}, "
                f"missing {_short(missing)}",
            )
    return usable


def compare_categories(train: Sequence[dict], val: Sequence[dict]) -> list[str]:
    """Differences between two category lists, by id and name (order in the list does not matter)."""
    a = {c["id"]: c["name"] for c in train if isinstance(c, dict) and "id" in c and "name" in c}
    b = {c["id"]: c["name"] for c in val if isinstance(c, dict) and "id" in c and "name" in c}
    differences = []
    only_train, only_val = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_train:
        differences.append("only in training: " + ", ".join(f"{i} {a[i]!r}" for i in only_train[:10]))
    if only_val:
        differences.append("only in validation: " + ", ".join(f"{i} {b[i]!r}" for i in only_val[:10]))
    renamed = [i for i in sorted(set(a) & set(b)) if a[i] != b[i]]
    if renamed:
        differences.append("same id, other name: " + ", ".join(f"{i} {a[i]!r} vs {b[i]!r}" for i in renamed[:10]))
    return differences


def audit_coco(
    annotations_path: str,
    images_dir: str,
    val_annotations_path: str | None = None,
    anchor: AnchorCheck | None = None,
    workers: int | None = None,
    progress: bool = True,
    samples_per_class: int = 4,
) -> AuditResult:
    """Audits a COCO instances JSON and its image folder (see the module docstring)."""
    start = time.perf_counter()
    data, error = _read_json(annotations_path)
    val_data, val_error = (None, None)
    if val_annotations_path:
        val_data, val_error = _read_json(val_annotations_path)
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
) -> AuditResult:
    """Audits an already-parsed COCO dict against the images under `images_dir`."""
    start = time.perf_counter()
    hits = _Collector()
    source = dict(source or {"annotations": "<memory>", "images": images_dir})
    for message in read_errors:
        hits.add("coco_format", message=message)
    settings = _settings(anchor)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        if data is not None:
            hits.add("coco_format", message='top level must be an object with "images", "annotations", "categories"')
        return _empty_result("coco", source, hits, settings, start)
    categories = check_categories(data.get("categories"), hits)
    if val_data is not None:
        if isinstance(val_data, dict) and isinstance(val_data.get("categories"), list):
            differences = compare_categories(data.get("categories") or [], val_data["categories"])
            for difference in differences:
                hits.add("val_categories_differ", message=difference)
        else:
            hits.add("val_categories_differ", message='the validation file has no "categories" list')
    if not categories:
        return _empty_result("coco", source, hits, settings, start)
    dataset = coco.parse_coco({**data, "categories": categories}, source.get("annotations", "<memory>"))
    label_map = dataset.label_map
    for issue in dataset.issues:
        hits.add(issue.reason, issue.image_id, issue.annotation_id, _first_sentence(issue.message))
    entries = {e.image_id: e for e in dataset.images}

    def check(entry: coco.ImageEntry) -> _ImageResult:
        return check_coco_image(entry, images_dir, label_map, anchor)

    results = _run_parallel(check, dataset.images, workers, progress, "audit images")
    result = _aggregate(
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
    )
    result.load_sample = lambda image_id: _coco_sample(entries[image_id], images_dir, label_map)
    result.seconds = time.perf_counter() - start
    return result


def check_coco_image(
    entry: coco.ImageEntry, images_dir: str, label_map: LabelMap, anchor: AnchorCheck | None = None
) -> _ImageResult:
    """The converter's image and annotation checks on one image, plus the audit's own. Thread-safe."""
    from PIL import Image

    hits: list = []
    result = _ImageResult(entry.image_id, entry.file_name, False, [], hits, entry.image_id)

    def skip_image(reason: str, message: str) -> _ImageResult:
        hits.append((reason, entry.image_id, None, f"{entry.file_name}: {message}"))
        hits.extend(("annotation_of_skipped_image", entry.image_id, a["id"], reason) for a in entry.annotations)
        return result

    path = io.join(images_dir, entry.file_name)
    try:
        raw = _read_bytes(path)
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


def coco_annotation_object(
    annotation: dict, height: int, width: int, label_map: LabelMap
) -> tuple[AuditObject | None, list[tuple[str, str]]]:
    """The converter's box and mask checks on one annotation; the object, or None when it would be skipped."""
    from pycocotools import mask as mask_utils

    hits = []
    box, reason, message = clip_coco_box(annotation.get("bbox"), height, width)
    if reason in ("box_invalid", "box_degenerate"):
        return None, [(reason, message)]
    if reason:
        hits.append((reason, message))
    segmentation = annotation.get("segmentation")
    rle = _clean_polygon_rle(segmentation, height, width)
    if rle is None:
        mask, reason, message = segmentation_to_mask(segmentation, height, width)
        if mask is None:
            return None, hits + [(reason, message)]
        if reason:
            hits.append((reason, message))
        rle = mask_utils.encode(np.asfortranarray(mask))
    if int(mask_utils.area(rle)) == 0:
        return None, hits + [("mask_empty", "the segmentation covers no pixel of the image")]
    return AuditObject(
        annotation_id=annotation["id"],
        class_id=label_map.to_contiguous(annotation["category_id"]),
        is_crowd=bool(annotation.get("iscrowd", 0)),
        box=box,
        rle=rle,
    ), hits


def _clean_polygon_rle(segmentation: Any, height: int, width: int):
    """The RLE `segmentation_to_mask` would rasterise for a polygon list it accepts unchanged, else None."""
    from pycocotools import mask as mask_utils

    if not isinstance(segmentation, list) or not segmentation:
        return None
    for part in segmentation:
        # type() rather than isinstance: a bool is not a coordinate (as in `coco_geometry.is_number`).
        if not isinstance(part, list) or len(part) < 6 or len(part) % 2 or not all(type(v) in _NUMBER for v in part):
            return None
        if not math.isfinite(math.fsum(part)):  # a NaN or infinity makes the sum non-finite
            return None
    parts = [[float(v) for v in part] for part in segmentation]
    return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))


def _coco_sample(entry: coco.ImageEntry, images_dir: str, label_map: LabelMap) -> Sample:
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


# ---------------------------------------------------------------------------------------------
# checks shared by both modes


def object_checks(
    image_id: Any,
    height: int,
    width: int,
    objects: Sequence[AuditObject],
    names: Sequence[str],
    anchor: AnchorCheck | None,
    num_annotations: int,
) -> list[tuple]:
    """Mask against box, duplicates, conflicting labels, crowd, small objects and empty images of one image."""
    from pycocotools import mask as mask_utils

    hits = []

    def name(class_id: int) -> str:
        return names[class_id - 1] if 1 <= class_id <= len(names) else f"label {class_id}"

    if not objects:
        what = "no annotation" if num_annotations == 0 else f"none of its {num_annotations} annotations usable"
        return [("images_without_annotations", image_id, None, what)]
    things = [o for o in objects if not o.is_crowd]
    for o in objects:
        if o.is_crowd:
            hits.append(("crowd_annotations", image_id, o.annotation_id, f"{name(o.class_id)}"))
    if not things:
        hits.append(("crowd_only_images", image_id, None, f"{len(objects)} crowd region(s), no object"))
        return hits
    boxes = np.array([o.box for o in things], dtype=np.float64)
    with_mask = [k for k, o in enumerate(things) if o.rle is not None]
    if with_mask:
        extents = np.asarray(mask_utils.toBbox([things[k].rle for k in with_mask]), dtype=np.float64).reshape(-1, 4)
        extents[:, 2:] += extents[:, :2]
        agreement = _paired_iou(boxes[with_mask], extents)
        for k, extent, iou in zip(with_mask, extents, agreement):
            if iou < MASK_BOX_MIN_IOU:
                hits.append(
                    (
                        "mask_box_mismatch",
                        image_id,
                        things[k].annotation_id,
                        f"box {_fmt_box(boxes[k])}, mask extent {_fmt_box(extent)} (IoU {iou:.2f})",
                    )
                )
    for o, box in zip(things, boxes):
        if anchor is not None:
            side = math.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)) * anchor.scale(height, width)
            if side < anchor.smallest_anchor:
                hits.append(
                    (
                        "small_objects",
                        image_id,
                        o.annotation_id,
                        f"{name(o.class_id)} {side:.1f} px at the input size < {anchor.smallest_anchor:g} px",
                    )
                )
    if len(things) > 1:
        ious = _box_iou(boxes, boxes)
        first, second = np.nonzero(np.triu(ious > DUPLICATE_IOU, k=1))
        for i, j in zip(first.tolist(), second.tolist()):
            a, b = things[i], things[j]
            if a.rle is not None and b.rle is not None:
                if float(mask_utils.iou([a.rle], [b.rle], [0])[0][0]) <= DUPLICATE_IOU:
                    continue
            if a.class_id == b.class_id:
                hits.append(
                    (
                        "duplicate_annotation",
                        image_id,
                        b.annotation_id,
                        f"annotations {a.annotation_id} and {b.annotation_id} are both {name(a.class_id)!r}",
                    )
                )
            else:
                hits.append(
                    (
                        "conflicting_labels",
                        image_id,
                        b.annotation_id,
                        f"annotation {a.annotation_id} {name(a.class_id)!r} and annotation {b.annotation_id} "
                        f"{name(b.class_id)!r} cover one object",
                    )
                )
    return hits


def _aggregate(
    mode: str,
    source: dict,
    names: list[str],
    results: Iterable[_ImageResult],
    hits: _Collector,
    settings: dict,
    anchor: AnchorCheck | None,
    num_images: int,
    num_annotations: int,
    samples_per_class: int,
) -> AuditResult:
    num_classes = len(names)
    instances = np.zeros(num_classes, dtype=np.int64)
    images_per_class = np.zeros(num_classes, dtype=np.int64)
    small = np.zeros(num_classes, dtype=np.int64)
    samples: dict[int, list] = collections.defaultdict(list)
    usable_images = usable_annotations = crowd = unusable_images = 0
    for result in results:
        for check, image_id, annotation_id, message in result.hits:
            hits.add(check, image_id, annotation_id, message)
        if not result.usable:
            unusable_images += 1
            continue
        usable_images += 1
        usable_annotations += len(result.objects)
        classes = set()
        for o in result.objects:
            if o.is_crowd:
                crowd += 1
            elif 1 <= o.class_id <= num_classes:
                instances[o.class_id - 1] += 1
                classes.add(o.class_id)
        for class_id in sorted(classes):
            images_per_class[class_id - 1] += 1
            if len(samples[class_id]) < samples_per_class:
                samples[class_id].append(result.sample_key)
        small_ids = {a for c, _, a, _ in result.hits if c == "small_objects"}
        for o in result.objects:
            if o.annotation_id in small_ids and not o.is_crowd and 1 <= o.class_id <= num_classes:
                small[o.class_id - 1] += 1

    total = int(instances.sum())
    if num_images and unusable_images > MOST * num_images:
        hits.add("most_images_unusable", message=f"{unusable_images} of {num_images} images")
    if num_annotations and num_annotations - usable_annotations > MOST * num_annotations:
        hits.add(
            "most_annotations_unusable",
            message=f"{num_annotations - usable_annotations} of {num_annotations} annotations",
        )
    if total == 0:
        if num_images:
            hits.add("no_instances", message=f"{num_images} images, {num_annotations} annotations, 0 usable objects")
    elif num_classes > 1:
        top = int(np.argmax(instances))
        share = instances[top] / total
        if share >= DOMINANT_WARNING:
            hits.add(
                "one_class_dominates",
                message=f"{names[top]!r} has {int(instances[top])} of {total} instances ({share:.0%}) "
                f"with {num_classes} classes declared",
            )
            if share < DOMINANT_ERROR:
                hits.severity["one_class_dominates"] = WARNING
    conflicts = hits.count["conflicting_labels"]
    if conflicts and conflicts > CONFLICT_ERROR_SHARE * max(total, 1):
        # A few (COCO has a seat labelled both couch and chair) blur two classes; many mean an export that
        # writes objects twice under two classes, which teaches the model the classes are one.
        hits.severity["conflicting_labels"] = ERROR
        hits.summary["conflicting_labels"] = f"{conflicts} pair(s), {conflicts / max(total, 1):.1%} of the instances"
    empty = [i for i in range(num_classes) if instances[i] == 0]
    if total and empty:
        hits.add(
            "classes_without_instances",
            message=f"{len(empty)} of {num_classes}: " + ", ".join(repr(names[i]) for i in empty[:10]),
        )
        hits.summary["classes_without_instances"] = f"{len(empty)} class(es)"
    present = instances[instances > 0]
    if present.size > 1 and present.max() / present.min() > IMBALANCE_INFO:
        most, least = int(np.argmax(instances)), int(np.argmin(np.where(instances > 0, instances, np.inf)))
        hits.add(
            "class_imbalance",
            message=f"ratio {present.max() / present.min():.0f}: {names[most]!r} {int(instances[most])}, "
            f"{names[least]!r} {int(instances[least])}",
        )
    if hits.count["small_objects"]:
        mostly_small = [
            i for i in range(num_classes) if instances[i] >= 3 and small[i] >= SMALL_CLASS_SHARE * instances[i]
        ]
        hits.summary["small_objects"] = f"{hits.count['small_objects']} object(s)" + (
            "; mostly small: " + ", ".join(f"{names[i]!r} {int(small[i])} of {int(instances[i])}" for i in mostly_small)
            if mostly_small
            else ""
        )
        if mostly_small:
            hits.severity["small_objects"] = WARNING
    return AuditResult(
        mode=mode,
        source=source,
        names=names,
        num_images=num_images,
        num_annotations=num_annotations,
        num_usable_images=usable_images,
        num_usable_annotations=usable_annotations,
        num_crowd=crowd,
        instances=instances,
        images_per_class=images_per_class,
        findings=hits.findings(),
        samples=dict(samples),
        settings=settings,
    )


def _empty_result(mode: str, source: dict, hits: _Collector, settings: dict, start: float) -> AuditResult:
    return AuditResult(
        mode=mode,
        source=source,
        names=[],
        num_images=0,
        num_annotations=0,
        num_usable_images=0,
        num_usable_annotations=0,
        num_crowd=0,
        instances=np.zeros(0, dtype=np.int64),
        images_per_class=np.zeros(0, dtype=np.int64),
        findings=hits.findings(),
        samples={},
        settings=settings,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# TFRecords


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
    hits = _Collector()
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

    def check(item) -> _ImageResult:
        path, n, record = item
        result = check_record(record, label_map, anchor, key=(io.basename(path), n))
        result.serialized = record  # kept only while aggregating (for samples)
        return result

    taken: collections.Counter = collections.Counter()
    num_records = 0

    def keep_samples(results):
        # Keeps the bytes of the records `_aggregate` will pick as samples (the first usable ones per class).
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

    results = list(keep_samples(_run_parallel(check, records(), workers, progress, "audit records")))
    max_label = max((o.class_id for r in results for o in r.objects), default=0)
    if label_map is None:
        names = [f"label {i}" for i in range(1, max_label + 1)]
    result = _aggregate(
        "records",
        source,
        names,
        results,
        hits,
        _settings(anchor),
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


def check_record(serialized: bytes, label_map: LabelMap | None, anchor: AnchorCheck | None, key=None) -> _ImageResult:
    """The checks of one serialized tf.Example in the converter's layout. Thread-safe."""
    import tensorflow as tf
    from PIL import Image

    hits: list = []
    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except Exception as error:  # noqa: BLE001 - protobuf raises its own DecodeError
        return _ImageResult(key, "", False, [], [("record_invalid", key, None, f"not a tf.Example ({error})")], key)
    source_id = b"".join(_feature(features, "image/source_id", "bytes_list")).decode("utf-8", "replace")
    image_id = source_id or (f"{key[0]}#{key[1]}" if key else "?")
    file_name = b"".join(_feature(features, "image/filename", "bytes_list")).decode("utf-8", "replace")
    result = _ImageResult(image_id, file_name, False, [], hits, key)
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
                ("box_out_of_bounds_clipped", image_id, annotation_id, f"normalised box {_fmt_box((x0, y0, x1, y1))}")
            )
        x0, x1 = np.clip([x0, x1], 0, 1) * width
        y0, y1 = np.clip([y0, y1], 0, 1) * height
        if x1 - x0 < 1 or y1 - y0 < 1:
            hits.append(("box_degenerate", image_id, annotation_id, f"box {_fmt_box((x0, y0, x1, y1))} px"))
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


# ---------------------------------------------------------------------------------------------
# helpers


def _run_parallel(fn, items, workers, progress, desc) -> Iterable:
    from tqdm import tqdm

    total = len(items) if isinstance(items, (list, tuple)) else None
    workers = workers or min(8, os.cpu_count() or 1)
    with tqdm(total=total, unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for result in ordered_parallel_map(fn, items, workers):
            bar.update(1)
            yield result


def _settings(anchor: AnchorCheck | None) -> dict:
    return {
        "duplicate_iou": DUPLICATE_IOU,
        "mask_box_min_iou": MASK_BOX_MIN_IOU,
        "dominant_share_error": DOMINANT_ERROR,
        "dominant_share_warning": DOMINANT_WARNING,
        "anchor": dataclasses.asdict(anchor) if anchor else None,
    }


def _read_json(path: str) -> tuple[Any, str | None]:
    try:
        raw = _read_bytes(path)
    except FileNotFoundError:
        return None, f"{path} not found"
    try:
        return json.loads(raw), None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"{path} is not valid JSON: {error}"


def _read_bytes(path: str) -> bytes:
    if io.is_url(path):
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(path) from None
    with open(path, "rb") as f:
        return f.read()


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a[i] and b[i]."""
    inter = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None) * np.clip(
        np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None
    )
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes [N, 4] x [M, 4]."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _fmt_box(box) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in box) + "]"


def _first_sentence(message: str) -> str:
    return message.split("; ")[0]


def _short(values, limit: int = 10) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")
