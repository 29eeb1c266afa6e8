"""The audit's vocabulary: every check with its severity, meaning and fix, and the findings they make.

The converter's skip reasons (`coco.REASONS`) keep their names here, so a user who reads
`image_missing` in an audit reads the same word in a conversion report.
"""

from __future__ import annotations

import collections
import dataclasses

from tfmaskrcnn.data import coco

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
FAIL_ON = (ERROR, WARNING)  # `tfmaskrcnn audit --fail-on`: the least severe finding that makes the exit code 1
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


# check -> (severity, what it means, the fix). Converter reasons keep their names.
CHECKS: dict[str, tuple[str, str, str]] = {
    # the file as a whole and the categories
    "coco_format": (ERROR, "the annotation file cannot be read as COCO instances", "write a COCO instances JSON"),
    "category_invalid": (
        ERROR,
        "category entry without an integer id and a name",
        'give every category "id" and "name"',
    ),
    "category_options": (
        ERROR,
        "the class options cannot be applied to these categories",
        "fix --class-map / --drop-categories (names are matched exactly, case included)",
    ),
    "categories_left_out": (
        INFO,
        "category with no annotation left out of the label map: a parent (supercategory, such as Roboflow's id 0) "
        "or named like background; as a class it could never be learned",
        "nothing to do (`tfmaskrcnn convert` leaves it out too); --keep-empty-categories keeps it",
    ),
    "duplicate_category_id": (ERROR, "two categories share one id", "give every category a unique id"),
    "duplicate_category_name": (
        ERROR,
        "two categories share one name: the model cannot tell them apart by name and metrics keyed by name collide",
        "merge the categories (and their annotations) or rename one",
    ),
    "category_id_gaps": (
        INFO,
        "category ids are not 1..K (0-indexed, gaps or unsorted): any ids are fine",
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
    "category_dropped": (
        INFO,
        coco.REASONS["category_dropped"][1],
        "nothing to do if intended; the conversion report counts them per rule",
    ),
    "crowd_skipped": (INFO, coco.REASONS["crowd_skipped"][1], "nothing to do if intended"),
    "crowd_as_instance": (INFO, coco.REASONS["crowd_as_instance"][1], "nothing to do if intended"),
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
    "class_only_crowd": (
        ERROR,
        "class whose every annotation is a crowd region (iscrowd=1): Model Garden skips crowd in training, so the "
        "model gets no instance of it and can never predict it",
        "convert (and audit) with `--crowd as-instances` (CVAT exports brush masks as iscrowd=1 RLE), or redraw "
        "the objects as polygons",
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


class Collector:
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


def short_list(values, limit: int = 10) -> str:
    values = list(values)
    return ", ".join(str(v) for v in values[:limit]) + (", ..." if len(values) > limit else "")
