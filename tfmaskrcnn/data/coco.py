"""Reading and validating a COCO instances file into clean per-image records.

Every image and annotation of the input ends in exactly one place: written, or
skipped with one reason from `REASONS`. Repairs that keep the data (clipping a box,
converting an image to RGB) are counted too, so the conversion report accounts for
every record. Decisions a user may want to know about:

* Annotations are in the stored pixel order of the image file. EXIF orientation is
  ignored, as it is by pycocotools and `tf.io.decode_image`.
* An image whose real size differs from the JSON `width`/`height` is skipped
  (`image_size_mismatch`): its polygons and RLEs were drawn for another raster
  (often an EXIF-rotated or resized copy), so using them would misplace every mask.
  A JSON record without width/height takes the real size (`image_size_missing`).
* The box written is the COCO `bbox` clipped to the image, not a box recomputed from
  the mask, so boxes match what COCO evaluation scores against.
* The area written is the COCO `area` when it is positive, otherwise the mask's pixel
  count; COCO evaluation uses it for its small/medium/large ranges.
* An image whose annotations were all skipped is still written, as a negative example.
* Category ids may be any integers; which categories become classes 1..K (empty parent and
  background categories left out, `--class-map`, `--drop-categories`) is decided by
  `categories.plan_categories`, shared with the audit. An annotation of an undeclared category
  is skipped (`category_id_zero` when it is 0: ids shifted by one, the usual cause).
* Crowd regions (iscrowd=1) are kept as crowd, skipped, or written as ordinary instances
  (`--crowd keep|skip|as-instances`; CVAT writes brush masks as crowd RLE).
* Two images with one id stop the conversion (`check_unique_image_ids`): annotations name
  their image by id only, so which one they belong to cannot be known. The audit, which
  reports instead of stopping, lists every repeated id (`duplicate_image_id`).

`load_coco` checks the JSON (ids, categories, file names) without touching the
images; `load_image_record` reads and checks one image and its annotations and is
safe to run in worker threads. Image decoding lives in `images`, box and mask
decoding of one annotation in `coco_geometry`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import posixpath
from typing import Any

import numpy as np

from tfmaskrcnn.data.categories import CROWD_MODES, CategoryError, CategoryOptions, CategoryPlan, plan_categories
from tfmaskrcnn.data.coco_geometry import clip_coco_box, is_int, is_number, segmentation_to_mask
from tfmaskrcnn.data.images import UnsupportedImageMode, decode_to_rgb, encode_rgb
from tfmaskrcnn.data.label_map import LabelMap

IMAGE_SKIPPED = "image_skipped"
ANNOTATION_SKIPPED = "annotation_skipped"
DROPPED = "dropped"  # left out on the user's request (--drop-categories, --class-map, --crowd skip)
CONVERTED = "converted"
FIXED = "fixed"

# reason -> (kind, what it means). The vocabulary is fixed so reports can be compared.
REASONS: dict[str, tuple[str, str]] = {
    "image_record_invalid": (IMAGE_SKIPPED, "image entry without an integer id or a file_name"),
    "duplicate_image_id": (
        IMAGE_SKIPPED,
        "image id shared by several images: which one its annotations belong to is unknown (the audit reports "
        "it; the converter refuses the file)",
    ),
    "file_name_escapes_image_dir": (IMAGE_SKIPPED, "file_name is absolute or leaves the image directory"),
    "image_missing": (IMAGE_SKIPPED, "image file not found"),
    "image_corrupt": (IMAGE_SKIPPED, "image file cannot be decoded"),
    "image_unsupported_mode": (IMAGE_SKIPPED, "pixel format with no defined conversion to 8-bit RGB"),
    "image_size_mismatch": (IMAGE_SKIPPED, "real image size differs from the JSON width/height"),
    "annotation_record_invalid": (ANNOTATION_SKIPPED, "annotation entry without integer id/image_id/category_id"),
    "duplicate_annotation_id": (ANNOTATION_SKIPPED, "annotation id already used by an earlier annotation"),
    "annotation_unknown_image": (ANNOTATION_SKIPPED, "image_id not among the images"),
    "annotation_of_skipped_image": (ANNOTATION_SKIPPED, "its image was skipped"),
    "category_id_zero": (ANNOTATION_SKIPPED, "category_id 0 while no category has id 0 (ids shifted by one?)"),
    "annotation_unknown_category": (ANNOTATION_SKIPPED, "category_id not among the categories"),
    "category_dropped": (DROPPED, "its category is dropped on request (--drop-categories or --class-map drop)"),
    "crowd_skipped": (DROPPED, "crowd annotation (iscrowd=1) left out on request (--crowd skip)"),
    "box_invalid": (ANNOTATION_SKIPPED, "bbox is not four finite numbers"),
    "box_degenerate": (ANNOTATION_SKIPPED, "box narrower or lower than 1 px after clipping"),
    "segmentation_missing": (ANNOTATION_SKIPPED, "no segmentation (Mask R-CNN needs a mask)"),
    "segmentation_invalid": (ANNOTATION_SKIPPED, "segmentation is not a valid polygon list or RLE"),
    "polygon_too_few_points": (ANNOTATION_SKIPPED, "no polygon part with at least 3 points"),
    "mask_empty": (ANNOTATION_SKIPPED, "mask has no pixel inside the image"),
    "grayscale_converted": (CONVERTED, "grayscale image converted to RGB"),
    "rgba_converted": (CONVERTED, "image with alpha converted to RGB (alpha dropped)"),
    "cmyk_converted": (CONVERTED, "CMYK image converted to RGB"),
    "16bit_converted": (CONVERTED, "16-bit image scaled to 8 bits and converted to RGB"),
    "palette_converted": (CONVERTED, "palette image converted to RGB"),
    "format_converted": (CONVERTED, "file format other than JPEG/PNG re-encoded as PNG"),
    "crowd_as_instance": (
        CONVERTED,
        "crowd annotation (iscrowd=1) written as an ordinary instance (--crowd as-instances)",
    ),
    "box_out_of_bounds_clipped": (FIXED, "box clipped to the image"),
    "polygon_part_dropped": (FIXED, "polygon part with fewer than 3 points dropped, other parts kept"),
    "image_size_missing": (FIXED, "JSON image without width/height; real size used"),
}


class CocoFormatError(ValueError):
    """The annotation file as a whole cannot be used (bad JSON, bad categories)."""


@dataclasses.dataclass(frozen=True)
class Issue:
    """One skipped, converted or fixed record, with enough context to find it."""

    reason: str
    file: str
    image_id: int | None
    annotation_id: int | None
    message: str

    @property
    def kind(self) -> str:
        return REASONS[self.reason][0]


class IssueLog:
    """Counts issues by reason and keeps the first few of each as examples."""

    def __init__(self, max_examples: int = 5) -> None:
        self.max_examples = max_examples
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[Issue]] = collections.defaultdict(list)

    def add(self, issue: Issue) -> None:
        if issue.reason not in REASONS:
            raise KeyError(f"unknown issue reason {issue.reason!r}")
        self.counts[issue.reason] += 1
        if len(self.examples[issue.reason]) < self.max_examples:
            self.examples[issue.reason].append(issue)

    def extend(self, issues) -> None:
        for issue in issues:
            self.add(issue)

    def count(self, kind: str) -> int:
        return sum(n for reason, n in self.counts.items() if REASONS[reason][0] == kind)


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """An image of the JSON that passed the JSON-level checks, with its annotations."""

    image_id: int
    file_name: str  # normalised, relative to the image directory
    width: int | None
    height: int | None
    annotations: tuple[dict, ...]


@dataclasses.dataclass(frozen=True)
class Instance:
    annotation_id: int
    class_id: int  # contiguous 1..K
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    mask: np.ndarray  # uint8 [height, width], values 0/1
    area: float
    is_crowd: bool


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """A clean image ready to be written: RGB pixels encoded as JPEG or PNG."""

    image_id: int
    file_name: str
    height: int
    width: int
    encoded: bytes
    image_format: str  # "jpeg" or "png"
    instances: tuple[Instance, ...]


@dataclasses.dataclass
class CocoDataset:
    """The checked JSON: label map, images to read, and the issues found so far."""

    annotations_path: str
    label_map: LabelMap
    images: list[ImageEntry]
    issues: list[Issue]
    num_images_in: int
    num_annotations_in: int
    plan: CategoryPlan | None = None  # how the categories became classes (None for a hand-made dataset)


def load_coco(annotations_path: str, categories: CategoryOptions | None = None, crowd: str = "keep") -> CocoDataset:
    """Reads and checks a COCO instances JSON (`info`/`licenses` optional); see `parse_coco`."""
    return parse_coco(read_coco_json(annotations_path), annotations_path, categories, crowd)


def duplicate_image_ids(images: Any) -> list[tuple[int, list[tuple[int, str]]]]:
    """[(image id, [(position, file_name), ...])] for every integer id that several `images` entries use."""
    positions: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
    for position, image in enumerate(images if isinstance(images, list) else []):
        image_id = image.get("id") if isinstance(image, dict) else None
        if is_int(image_id):
            positions[image_id].append((position, str(image.get("file_name") or "")))
    return [(i, where) for i, where in positions.items() if len(where) > 1]


def check_unique_image_ids(images: Any, source: str) -> None:
    """Raises CocoFormatError naming the file, the id and the file names when image ids repeat.

    Annotations point to images by id only: with two images under one id nothing says which
    one an annotation was drawn on (mmdetection #10666: a later image's objects trained on the
    first), so converting either would teach wrong masks.
    """
    duplicates = duplicate_image_ids(images)
    if not duplicates:
        return
    image_id, where = duplicates[0]
    names = " and ".join(f"images[{p}] ({n!r})" for p, n in where[:3]) + (" ..." if len(where) > 3 else "")
    more = (
        f" ({len(duplicates) - 1} more id(s) repeat: {', '.join(str(i) for i, _ in duplicates[1:6])})"
        if len(duplicates) > 1
        else ""
    )
    raise CocoFormatError(
        f"{source}: image id {image_id} is used by {names}{more}; annotations name their image by id, so which "
        "image they belong to is unknown. Give every image a unique id (renumber the images and the image_id of "
        "their annotations, or export again); `tfmaskrcnn audit` lists every repeated id"
    )


def read_coco_json(annotations_path: str) -> Any:
    """The parsed JSON of a COCO file (local or gs://); raises CocoFormatError naming the file."""
    import tensorflow as tf

    if not tf.io.gfile.exists(annotations_path):
        raise CocoFormatError(f"annotation file {annotations_path} not found")
    with tf.io.gfile.GFile(annotations_path, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise CocoFormatError(f"{annotations_path}: not valid JSON{where}: {error}") from None
    return data


def parse_coco(
    data: Any,
    annotations_path: str = "<memory>",
    categories: CategoryOptions | None = None,
    crowd: str = "keep",
    refuse_duplicate_image_ids: bool = True,
) -> CocoDataset:
    """Checks an already-parsed COCO dict; see `load_coco`.

    `categories` gives the user's choices about classes (class map, drops, empty
    categories; see `categories.plan_categories`); `crowd` what happens to iscrowd=1
    annotations: "keep" (written as crowd; Model Garden skips them in training), "skip"
    (left out, counted) or "as-instances" (written as ordinary instances). Repeated image
    ids raise CocoFormatError (see `check_unique_image_ids`); the audit, which reports
    instead of refusing, passes `refuse_duplicate_image_ids=False` and gets one
    `duplicate_image_id` issue per repeat.
    """
    if not isinstance(data, dict):
        raise CocoFormatError(f"{annotations_path}: top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f'{annotations_path}: "{key}" must be a list (COCO instances format)')
    if crowd not in CROWD_MODES:
        raise CocoFormatError(f"crowd mode {crowd!r} is not one of {', '.join(CROWD_MODES)} (--crowd)")
    if refuse_duplicate_image_ids:
        check_unique_image_ids(data["images"], annotations_path)
    try:
        plan = plan_categories(data["categories"], data["annotations"], categories, annotations_path)
    except CategoryError as error:
        raise CocoFormatError(str(error)) from None

    issues: list[Issue] = []
    images: dict[int, dict] = {}  # id -> {"entry fields", "annotations": []}
    known_ids: set[int] = set()  # every integer image id in the JSON, skipped or not
    file_names: dict[int, str] = {}  # first file_name of each id, for messages
    for position, image in enumerate(data["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not is_int(image_id) or not isinstance(file_name, str) or not file_name:
            issues.append(
                Issue(
                    "image_record_invalid",
                    str(file_name or ""),
                    image_id if is_int(image_id) else None,
                    None,
                    f'images[{position}] needs an integer "id" and a "file_name"',
                )
            )
            if is_int(image_id) and image_id not in known_ids:
                known_ids.add(image_id)
                file_names[image_id] = str(file_name or "")
            continue
        if image_id in known_ids:
            issues.append(
                Issue(
                    "duplicate_image_id",
                    file_name,
                    image_id,
                    None,
                    f"images[{position}] ({file_name}) reuses id {image_id} of {file_names.get(image_id)!r}; which "
                    "of them its annotations belong to is unknown. Give every image a unique id",
                )
            )
            continue
        known_ids.add(image_id)
        file_names[image_id] = file_name
        relative = safe_relative_path(file_name)
        if relative is None:
            issues.append(
                Issue(
                    "file_name_escapes_image_dir",
                    file_name,
                    image_id,
                    None,
                    f"file_name {file_name!r} is absolute or leaves the image directory; "
                    "file names must be relative to --images",
                )
            )
            continue
        width, height = image.get("width"), image.get("height")
        # Some exporters write 640.0; an integral float is a size, anything else counts as missing.
        sizes_ok = all(is_number(v) and v > 0 and float(v).is_integer() for v in (width, height))
        images[image_id] = {
            "file_name": relative,
            "width": int(width) if sizes_ok else None,
            "height": int(height) if sizes_ok else None,
            "annotations": [],
        }

    seen_annotation_ids: set[int] = set()
    for position, annotation in enumerate(data["annotations"]):
        record = annotation if isinstance(annotation, dict) else {}
        fields = [record.get(k) for k in ("id", "image_id", "category_id")]
        annotation_id, image_id, category_id = fields
        file_name = file_names.get(image_id, "") if is_int(image_id) else ""

        def issue(reason: str, message: str) -> None:
            issues.append(Issue(reason, file_name, image_id, annotation_id, message))

        if not all(is_int(v) for v in fields):
            issues.append(
                Issue(
                    "annotation_record_invalid",
                    file_name,
                    image_id if is_int(image_id) else None,
                    annotation_id if is_int(annotation_id) else None,
                    f'annotations[{position}] needs integer "id", "image_id" and "category_id"',
                )
            )
            continue
        if annotation_id in seen_annotation_ids:
            issue(
                "duplicate_annotation_id", f"annotations[{position}] reuses id {annotation_id}; the first one is kept"
            )
            continue
        seen_annotation_ids.add(annotation_id)
        if image_id not in known_ids:
            issues.append(
                Issue(
                    "annotation_unknown_image",
                    "",
                    image_id,
                    annotation_id,
                    f'annotations[{position}] refers to image_id {image_id}, which is not in "images"',
                )
            )
        elif image_id not in images:
            issue("annotation_of_skipped_image", f"image {image_id} was skipped (see its image issue)")
        elif category_id not in plan.class_of:
            if category_id == 0:
                issue(
                    "category_id_zero",
                    f"annotation {annotation_id} has category_id 0, but no category has id 0 (ids shifted by one "
                    "against the categories?); fix the category_id or declare the category",
                )
            else:
                issue(
                    "annotation_unknown_category",
                    f'annotation {annotation_id} has category_id {category_id}, which is not in "categories"; '
                    "add the category or fix the id",
                )
        elif plan.class_of[category_id] is None:
            issue("category_dropped", f"category {category_id} is dropped on request")
        elif record.get("iscrowd") and crowd == "skip":
            issue("crowd_skipped", "iscrowd=1, left out (--crowd skip)")
        else:
            if record.get("iscrowd") and crowd == "as-instances":
                issue("crowd_as_instance", "iscrowd=1 written as an ordinary instance (--crowd as-instances)")
                annotation = {**record, "iscrowd": 0}
            images[image_id]["annotations"].append(annotation)

    entries = [
        ImageEntry(
            image_id=i,
            file_name=v["file_name"],
            width=v["width"],
            height=v["height"],
            annotations=tuple(v["annotations"]),
        )
        for i, v in images.items()
    ]
    return CocoDataset(
        annotations_path=annotations_path,
        label_map=plan.label_map,
        images=entries,
        issues=issues,
        num_images_in=len(data["images"]),
        num_annotations_in=len(data["annotations"]),
        plan=plan,
    )


def safe_relative_path(file_name: str) -> str | None:
    """`file_name` normalised to a relative path inside the image directory, or None if it escapes."""
    normalised = posixpath.normpath(file_name.replace("\\", "/"))
    if (
        normalised.startswith("/")
        or "://" in file_name
        or (len(normalised) > 1 and normalised[1] == ":")
        or normalised == ".."
        or normalised.startswith("../")
    ):
        return None
    return normalised


def load_image_record(
    entry: ImageEntry, images_dir: str, label_map: LabelMap
) -> tuple[ImageRecord | None, list[Issue]]:
    """Reads, converts and checks one image and its annotations. Thread-safe."""
    import tensorflow as tf
    from PIL import Image

    if "://" in images_dir:
        path = images_dir.rstrip("/") + "/" + entry.file_name
    else:
        path = os.path.join(images_dir, entry.file_name)
    issues: list[Issue] = []

    def skip_image(reason: str, message: str) -> tuple[None, list[Issue]]:
        issues.append(Issue(reason, entry.file_name, entry.image_id, None, message))
        issues.extend(
            Issue(
                "annotation_of_skipped_image",
                entry.file_name,
                entry.image_id,
                a["id"],
                f"image {entry.image_id} was skipped ({reason})",
            )
            for a in entry.annotations
        )
        return None, issues

    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            original = f.read()
    except tf.errors.NotFoundError:
        return skip_image("image_missing", f"{path} does not exist; check --images and the file_name")
    try:
        pixels, image_format, reasons = decode_to_rgb(original)
    except UnsupportedImageMode as error:
        return skip_image("image_unsupported_mode", f"{path}: {error}")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # Pillow's "not an image"
        return skip_image("image_corrupt", f"{path} cannot be decoded: {error}")

    height, width = pixels.shape[:2]
    if entry.width is None or entry.height is None:
        issues.append(
            Issue(
                "image_size_missing",
                entry.file_name,
                entry.image_id,
                None,
                f"no width/height in the JSON; using the real size {width}x{height}",
            )
        )
    elif (entry.width, entry.height) != (width, height):
        return skip_image(
            "image_size_mismatch",
            f"{path} is {width}x{height} but the JSON says {entry.width}x{entry.height}; the "
            "annotations were made for another raster (EXIF rotation or a resized copy?). Fix the "
            "image or the annotations",
        )
    for reason in reasons:
        issues.append(Issue(reason, entry.file_name, entry.image_id, None, REASONS[reason][1]))
    encoded = original if not reasons else encode_rgb(pixels, image_format)

    instances = []
    for annotation in entry.annotations:
        instance, annotation_issues = _make_instance(annotation, height, width, label_map)
        issues.extend(dataclasses.replace(i, file=entry.file_name, image_id=entry.image_id) for i in annotation_issues)
        if instance is not None:
            instances.append(instance)
    record = ImageRecord(
        image_id=entry.image_id,
        file_name=entry.file_name,
        height=height,
        width=width,
        encoded=encoded,
        image_format=image_format,
        instances=tuple(instances),
    )
    return record, issues


def _make_instance(
    annotation: dict, height: int, width: int, label_map: LabelMap
) -> tuple[Instance | None, list[Issue]]:
    annotation_id = annotation["id"]
    issues: list[Issue] = []

    def issue(reason: str, message: str) -> Issue:
        return Issue(reason, "", None, annotation_id, message)

    box, box_reason, box_message = clip_coco_box(annotation.get("bbox"), height, width)
    if box_reason in ("box_invalid", "box_degenerate"):
        return None, [issue(box_reason, box_message)]
    if box_reason:
        issues.append(issue(box_reason, box_message))

    mask, mask_reason, mask_message = segmentation_to_mask(annotation.get("segmentation"), height, width)
    if mask is None:
        return None, issues + [issue(mask_reason, mask_message)]
    if mask_reason:
        issues.append(issue(mask_reason, mask_message))
    pixel_count = int(mask.sum())
    if pixel_count == 0:
        return None, issues + [issue("mask_empty", "the segmentation covers no pixel of the image")]

    area = annotation.get("area")
    if not is_number(area) or area <= 0:
        area = float(pixel_count)
    return Instance(
        annotation_id=annotation_id,
        class_id=label_map.to_contiguous(annotation["category_id"]),
        box=box,
        mask=mask,
        area=float(area),
        is_crowd=bool(annotation.get("iscrowd", 0)),
    ), issues
