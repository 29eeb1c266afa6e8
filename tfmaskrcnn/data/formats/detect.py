"""Which format an export is in, from what the tools write (file names and first bytes).

`detect_format(path)` returns the format and the evidence, or raises `ExportFormatError`
when nothing matches or several formats match (then `--format` decides). It reads at
most the first 64 KiB of a few files, so a large COCO JSON is not parsed twice.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tfmaskrcnn.data.formats import labelme, voc, yolo
from tfmaskrcnn.data.formats.base import ExportFormatError

_PEEK_BYTES = 65536
_PEEK_FILES = 5


@dataclasses.dataclass(frozen=True)
class Detection:
    format: str
    path: str  # the file to read: the COCO JSON, CVAT XML, YOLO YAML, or the Labelme/VOC folder
    evidence: str
    images_dir: str | None = None  # for a COCO JSON found in a folder: that folder


def detect_format(path: str) -> Detection:
    if "://" in path:  # remote paths: only COCO JSON is read from gs:// (by the converter)
        return Detection("coco", path, "a remote path; only COCO JSON is read from there")
    if os.path.isfile(path):
        return _detect_file(path)
    if path.lower().endswith(".json"):  # a missing COCO file: the COCO path reports it, as it always did
        return Detection("coco", path, "a JSON file name (COCO instances)")
    if not os.path.isdir(path):
        raise ExportFormatError(f"{path} does not exist (--annotations)")
    found = []
    yaml_path = yolo.find_yaml(path)
    if yaml_path:
        found.append(Detection("yolo", yaml_path, f"{os.path.basename(yaml_path)} (Ultralytics dataset YAML)"))
    if os.path.isfile(os.path.join(path, "annotations.xml")):
        found.append(Detection("cvat", os.path.join(path, "annotations.xml"), "annotations.xml (CVAT export)"))
    if voc.is_voc_folder(path):
        found.append(Detection("voc", path, "a SegmentationObject folder (Pascal VOC)"))
    json_files = sorted(n for n in os.listdir(path) if n.lower().endswith(".json"))
    kinds = {name: _json_kind(os.path.join(path, name)) for name in json_files[:_PEEK_FILES]}
    if any(kind == "labelme" for kind in kinds.values()):
        found.append(Detection("labelme", path, "JSON files with Labelme shapes"))
    coco_files = [name for name, kind in kinds.items() if kind == "coco"]
    if len(coco_files) == 1 and len(json_files) == 1:
        found.append(
            Detection("coco", os.path.join(path, coco_files[0]), f"{coco_files[0]} (COCO instances)", images_dir=path)
        )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExportFormatError(
            f"{path}: no known export found (looked for data.yaml, annotations.xml, SegmentationObject/, "
            "Labelme JSON files, one COCO JSON); give the annotation file and --format"
        )
    raise ExportFormatError(
        f"{path} looks like several formats ({'; '.join(f'{d.format}: {d.evidence}' for d in found)}); "
        "choose one with --format"
    )


def _detect_file(path: str) -> Detection:
    name = os.path.basename(path).lower()
    if name.endswith((".yaml", ".yml")):
        return Detection("yolo", path, "a YAML file (Ultralytics dataset YAML)")
    if name.endswith(".xml"):
        head = _peek(path)
        if b"<annotations" in head:
            return Detection("cvat", path, "an XML file with <annotations> (CVAT for images)")
        if b"<annotation" in head:
            raise ExportFormatError(
                f"{path} is a Pascal VOC detection XML: it has boxes, no masks. Give the VOC folder with "
                "SegmentationObject/ and SegmentationClass/"
            )
        raise ExportFormatError(f"{path}: an XML file that is not a CVAT for images export")
    if name.endswith(".json"):
        if _json_kind(path) == "labelme":
            return Detection("labelme", path, "a Labelme JSON file")
        return Detection("coco", path, "a JSON file (COCO instances)")
    raise ExportFormatError(f"{path}: cannot tell the format from the file name; give --format")


def _json_kind(path: str) -> str | None:
    """'labelme', 'coco' or None, from the first bytes (keys of a complete small file when possible)."""
    head = _peek(path)
    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        data = None  # larger than the peek: guess from the keys seen
    if data is not None:
        if labelme.is_labelme_json(data):
            return "labelme"
        return "coco" if isinstance(data, dict) and "annotations" in data else None
    if b'"shapes"' in head and b'"imagePath"' in head:
        return "labelme"
    return "coco" if b'"images"' in head or b'"annotations"' in head or b'"categories"' in head else None


def _peek(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(_PEEK_BYTES)
