"""The `--format` option of `tfmaskrcnn convert` and `tfmaskrcnn audit`.

    tfmaskrcnn convert --format yolo --annotations data.yaml --split train --output records/train
    tfmaskrcnn convert --annotations labelme_folder/ --output records/train      # format detected
    tfmaskrcnn audit --annotations cvat_export/annotations.xml --output audit/

A Labelme, CVAT, YOLO or VOC export is imported to COCO form first; then the command
runs exactly as on a COCO file. `convert` keeps that COCO file as
`imported_annotations.json` in the output folder (the records are converted from it, and
it is handy to inspect or to feed other COCO tools), and both commands write
`import_report.json` (what the import skipped or changed, and why) beside their output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from tfmaskrcnn.data.formats import FORMATS, load_export
from tfmaskrcnn.data.formats.base import IMPORT_REPORT_FILENAME, IMPORTED_ANNOTATIONS_FILENAME, ExportFormatError
from tfmaskrcnn.data.formats.detect import Detection, detect_format
from tfmaskrcnn.io import basename, join, write_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("auto",) + FORMATS,
        default="auto",
        help="format of --annotations: a COCO JSON, a Labelme folder, a CVAT for images 1.1 annotations.xml, "
        "an Ultralytics YOLO-seg data.yaml or a Pascal VOC folder (default: detected, and said)",
    )
    parser.add_argument("--split", help="split to read: YOLO train/val/test, VOC ImageSets name, CVAT subset")
    parser.add_argument(
        "--names",
        help="class list, one name per line (Labelme: the class order; VOC: line k is palette index k, line 0 "
        "background)",
    )


def prepare_convert(args: argparse.Namespace) -> int | None:
    """Imports a non-COCO export and points `args` at its COCO form; an exit code when the run must stop."""
    try:
        imported = _import(args)
    except ExportFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if imported is None:
        if not args.images:
            print(
                "error: --images is required with a COCO JSON (the folder its file_name entries are in)",
                file=sys.stderr,
            )
            return 2
        return None
    annotations_path = join(args.output, IMPORTED_ANNOTATIONS_FILENAME)
    write_atomic(annotations_path, json.dumps(imported.coco) + "\n")
    _write_report(imported, args.output)
    print(imported.format_table())
    if getattr(args, "strict", False) and imported.num_skipped:
        print(
            f"--strict: the import skipped {imported.num_skipped} record(s); nothing converted. See "
            f"{join(args.output, IMPORT_REPORT_FILENAME)}",
            file=sys.stderr,
        )
        return 1
    args.annotations, args.images, args.format = annotations_path, imported.images_dir, "coco"
    args.prefix = args.prefix or default_prefix(imported.split or imported.source)
    return None


def prepare_audit(args: argparse.Namespace):
    """(exit code or None, ImportedDataset or None): the import for `tfmaskrcnn audit --annotations EXPORT`."""
    if not args.annotations or args.records:
        return None, None  # auditing converted records (the command refuses RECORDS with --annotations)
    try:
        imported = _import(args)
        if imported is not None and args.val_annotations:
            raise ExportFormatError(
                "--val-annotations compares two COCO files; audit each split of a "
                f"{imported.format} export on its own (the label maps are compared when training)"
            )
    except ExportFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2, None
    if imported is not None:
        print(imported.format_table())
        _write_report(imported, args.output)
        args.images = imported.images_dir
    return None, imported


def default_prefix(source: str) -> str:
    """A shard prefix from the split or the export's name (letters, digits, '.', '_', '-')."""
    name = basename(source.rstrip("/\\")) or "imported"
    stem = re.sub(r"\.(json|xml|ya?ml)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip("._-") or "imported"


def _import(args: argparse.Namespace):
    """None for a COCO JSON (args.annotations/images completed), else the imported export."""
    format_name = getattr(args, "format", None) or "auto"
    split, names = getattr(args, "split", None), getattr(args, "names", None)
    if format_name == "auto" or format_name == "coco":
        detection = detect_format(args.annotations)
        if format_name == "auto":
            print(f"format: {detection.format} (detected: {detection.evidence}; --format overrides)")
        elif detection.format != "coco" and not args.annotations.lower().endswith(".json"):
            raise ExportFormatError(f"--format coco, but {args.annotations} looks like {detection.evidence}")
        else:
            detection = Detection("coco", detection.path, "--format coco", detection.images_dir)
    else:
        detection = Detection(format_name, args.annotations, f"--format {format_name}")
    if detection.format == "coco":
        if split or names:
            raise ExportFormatError("--split and --names are for Labelme, CVAT, YOLO and VOC exports, not COCO JSON")
        args.annotations = detection.path
        args.images = args.images or detection.images_dir
        return None
    return load_export(detection.format, detection.path, images_dir=args.images, names_file=names, split=split)


def _write_report(imported, output_dir: str) -> None:
    write_atomic(join(output_dir, IMPORT_REPORT_FILENAME), json.dumps(imported.to_json_dict(), indent=2) + "\n")
