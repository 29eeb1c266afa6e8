"""Importers for the formats users label in: Labelme, CVAT for images 1.1, Ultralytics YOLO-seg, Pascal VOC.

Each turns an export, as its tool writes it, into the COCO form of `base.ImportedDataset`,
which then goes through the same checks (`tfmaskrcnn audit`) and the same converter
(`tfmaskrcnn convert`) as a COCO file. `detect.detect_format` tells the formats apart;
`command` is the `--format` option of those two commands.
"""

from __future__ import annotations

from tfmaskrcnn.data.formats.base import ExportFormatError, ImportedDataset

FORMATS = ("coco", "labelme", "cvat", "yolo", "voc")


def load_export(
    format_name: str,
    path: str,
    images_dir: str | None = None,
    names_file: str | None = None,
    split: str | None = None,
) -> ImportedDataset:
    """Reads a Labelme, CVAT, YOLO or VOC export into COCO form (COCO itself needs no import)."""
    from tfmaskrcnn.data.formats import cvat, labelme, voc, yolo

    if format_name == "labelme":
        if split:
            raise ExportFormatError("--split is not used with --format labelme: convert one folder per split")
        return labelme.load_labelme(path, images_dir=images_dir, names_file=names_file)
    loaders = {"cvat": cvat.load_cvat, "yolo": yolo.load_yolo, "voc": voc.load_voc}
    if format_name not in loaders:
        raise ExportFormatError(f"unknown format {format_name!r}; choose one of {', '.join(FORMATS[1:])}")
    return loaders[format_name](path, images_dir=images_dir, names_file=names_file, split=split)


__all__ = ["FORMATS", "ExportFormatError", "ImportedDataset", "load_export"]
