"""The COCO-shaped form every importer returns, and the helpers the importers share.

An importer reads a folder as a labelling tool writes it and returns an `ImportedDataset`:
a COCO instances dict (images with file names relative to `images_dir`, annotations with
polygons or compressed RLE, categories with ids 1..K) that then goes through the same
checks and converter as a COCO file. The importer does only what is specific to its
format (finding the images, reading the shapes, mapping class names); everything the
COCO path checks (image sizes, degenerate boxes, polygons under 3 points, empty masks)
is left to it, so nothing is checked or converted twice.

What the importer cannot hand on (a box where a mask is needed, a line of a label file
that is not a polygon) is skipped and counted by reason, with the first few examples
naming the file and the record; what it changed on the way (a circle made a polygon,
parts of one instance merged) is counted too. Images without annotations are kept:
they are negatives, and teach the model background.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Iterable

import numpy as np

SKIPPED = "skipped"
CONVERTED = "converted"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Names that mean "background" or "do not use" in names files and label lists (Labelme's
# labels.txt starts with `__ignore__` and `_background_`); they never become a class.
BACKGROUND_NAMES = ("__ignore__", "_background_", "background", "_bg_")

IMPORT_REPORT_FILENAME = "import_report.json"
IMPORTED_ANNOTATIONS_FILENAME = "imported_annotations.json"


class ExportFormatError(ValueError):
    """The export as a whole cannot be read; the message names the file and the fix."""


@dataclasses.dataclass
class ImportedDataset:
    """A labelling tool's export in COCO form, with what the import skipped or changed."""

    format: str
    source: str  # the file or folder that was read
    images_dir: str  # the folder the COCO file names are relative to
    coco: dict[str, Any]
    reasons: dict[str, tuple[str, str]]  # reason -> (SKIPPED or CONVERTED, what it means)
    counts: dict[str, int]
    examples: dict[str, list[str]]
    notes: list[str]
    split: str | None = None

    @property
    def num_negative_images(self) -> int:
        annotated = {a["image_id"] for a in self.coco["annotations"]}
        return sum(1 for image in self.coco["images"] if image["id"] not in annotated)

    def counts_of(self, kind: str) -> dict[str, int]:
        return {r: n for r, n in sorted(self.counts.items()) if self.reasons[r][0] == kind}

    @property
    def num_skipped(self) -> int:
        return sum(self.counts_of(SKIPPED).values())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": "tfmaskrcnn.import_report",
            "version": 1,
            "source_format": self.format,
            "source": self.source,
            "split": self.split,
            "images_dir": self.images_dir,
            "totals": {
                "images": len(self.coco["images"]),
                "negative_images": self.num_negative_images,
                "annotations": len(self.coco["annotations"]),
                "categories": len(self.coco["categories"]),
            },
            "categories": [{"id": c["id"], "name": c["name"]} for c in self.coco["categories"]],
            "skipped": self.counts_of(SKIPPED),
            "converted": self.counts_of(CONVERTED),
            "reasons": {
                r: {"kind": self.reasons[r][0], "description": self.reasons[r][1]} for r in sorted(self.counts)
            },
            "examples": {r: list(v) for r, v in sorted(self.examples.items())},
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        split = f" (split {self.split})" if self.split else ""
        names = ", ".join(c["name"] for c in self.coco["categories"])
        lines = [
            f"imported {self.format} export {self.source}{split}: {len(self.coco['images'])} images "
            f"({self.num_negative_images} without annotations, kept as negatives), "
            f"{len(self.coco['annotations'])} annotations, {len(self.coco['categories'])} classes: {names}"
        ]
        rows = [(r, kind, n) for kind in (SKIPPED, CONVERTED) for r, n in self.counts_of(kind).items()]
        if rows:
            lines.append(f"{'import reason':<32} {'kind':<10} {'count':>7}")
            lines += [f"{r:<32} {k:<10} {n:>7}" for r, k, n in rows]
            for reason, messages in sorted(self.examples.items()):
                lines.append(f"  e.g. {reason}: {messages[0]}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


class CocoBuilder:
    """Collects images, categories and annotations in COCO form; ids are 1, 2, ... in order."""

    def __init__(self, format_name: str, source: str, reasons: dict[str, tuple[str, str]], max_examples: int = 5):
        self.format_name = format_name
        self.source = source
        self.reasons = reasons
        self.max_examples = max_examples
        self.categories: dict[str, int] = {}
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)
        self.notes: list[str] = []

    def category(self, name: str) -> int:
        """The category id of `name`, declaring it when new (ids in order of declaration)."""
        if name not in self.categories:
            self.categories[name] = len(self.categories) + 1
        return self.categories[name]

    def add_image(self, file_name: str, width: int | None, height: int | None) -> int:
        image = {"id": len(self.images) + 1, "file_name": file_name.replace(os.sep, "/")}
        if width and height:
            image.update(width=int(width), height=int(height))
        self.images.append(image)
        return image["id"]

    def add_polygons(self, image_id: int, category_id: int, polygons: list[list[float]]) -> None:
        """One instance from polygon parts (flat [x1, y1, x2, y2, ...] lists, pixels)."""
        xs = [v for part in polygons for v in part[0::2]]
        ys = [v for part in polygons for v in part[1::2]]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)] if xs and ys else []
        self._add(image_id, category_id, [list(map(float, part)) for part in polygons], bbox, None)

    def add_mask(self, image_id: int, category_id: int, mask: np.ndarray) -> None:
        """One instance from a 0/1 mask of the image's size, stored as compressed RLE."""
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        self._add(image_id, category_id, segmentation, bbox, float(mask_utils.area(rle)))

    def _add(self, image_id: int, category_id: int, segmentation: Any, bbox: list, area: float | None) -> None:
        annotation = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": segmentation,
            "bbox": bbox,
            "iscrowd": 0,
        }
        if area is not None:
            annotation["area"] = area
        self.annotations.append(annotation)

    def issue(self, reason: str, where: str, message: str, count: int = 1) -> None:
        """Counts a skipped or converted record; `where` names the file and the record."""
        if reason not in self.reasons:
            raise KeyError(f"unknown import reason {reason!r}")
        self.counts[reason] += count
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(f"{where}: {message}")

    def build(self, images_dir: str, split: str | None = None) -> ImportedDataset:
        if not self.categories:
            raise ExportFormatError(
                f"{self.source}: no class found (no labelled shape and no class list); label some objects, "
                "or give the class list with --names"
            )
        coco = {
            "info": {"description": f"imported from a {self.format_name} export by tfmaskrcnn", "source": self.source},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in self.categories.items()],
        }
        return ImportedDataset(
            format=self.format_name,
            source=self.source,
            images_dir=images_dir,
            coco=coco,
            reasons=self.reasons,
            counts=dict(self.counts),
            examples={r: list(v) for r, v in self.examples.items()},
            notes=list(self.notes),
            split=split,
        )


def read_names_file(path: str) -> list[str]:
    """Class names, one per line, in file order (blank lines and `#` comments left out).

    A line may be a CVAT/Datumaro `labelmap.txt` entry (`name:r,g,b:parts:actions`): the
    name is what comes before the first colon.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ExportFormatError(f"names file {path} cannot be read: {error.strerror} (--names)") from None
    names = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        names.append(text.split(":", 1)[0].strip())
    if not names:
        raise ExportFormatError(f"names file {path} lists no class; write one class name per line (--names)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportFormatError(
            f"names file {path} lists {', '.join(map(repr, duplicates))} twice; names must be unique"
        )
    return names


def is_background_name(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def common_root(paths: Iterable[str], fallback: str) -> str:
    """The deepest folder holding every path (the image root the file names are made relative to)."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if not folders:
        return os.path.abspath(fallback)
    return os.path.commonpath(folders)


def relative_to(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), root).replace(os.sep, "/")


def image_files(folder: str) -> list[str]:
    """Image files under `folder` (recursively), sorted."""
    found = []
    for directory, subfolders, names in os.walk(folder):
        subfolders.sort()
        found.extend(os.path.join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def check_local(path: str, what: str) -> str:
    if "://" in path:
        raise ExportFormatError(
            f"{path}: {what} must be a local path (copy the export to this machine, convert it, and write "
            "the records to gs:// with --output)"
        )
    return path
