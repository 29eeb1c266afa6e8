"""Ultralytics YOLO segmentation: `data.yaml` plus one `labels/.../*.txt` per image.

A label line is `class x1 y1 x2 y2 ... xn yn`: a 0-indexed class and a polygon in
coordinates divided by the image width and height. Decisions:

* Classes come from `names` (a list, or a dict {index: name}); class index i becomes
  COCO category id i + 1, so class 0 is a real class, not background.
* A split is `train`, `val` or `test` of the YAML: a folder of images (searched
  recursively) or a `.txt` list of image paths, resolved like Ultralytics does (against
  `path`, else the YAML's folder; a leading `../` that leads nowhere is retried without
  it, as in Roboflow exports). `--split` picks one; it is required when there are several.
* An image's label file is found by replacing the last `images` folder of its path by
  `labels` and the extension by `.txt`. An image without a label file, or with an empty
  one, is a negative and is kept (Ultralytics treats both as background).
* The image size is read from the file header with Pillow. An image with an EXIF
  rotation is skipped when it has labels: Ultralytics normalises to the rotated image,
  while the records keep the stored pixel order, so its polygons would be misplaced.
* Lines of 5 numbers are detection boxes (no mask) and are skipped with a count;
  coordinates above 1 (pixel coordinates written by a wrong export script) and class
  indices outside `names` are skipped with the file and line. An image whose every line
  was skipped is not written (its objects are there, unmasked: it is not a negative).
"""

from __future__ import annotations

import math
import os

from tfmaskrcnn.data.formats.base import (
    SKIPPED,
    CocoBuilder,
    ExportFormatError,
    ImportedDataset,
    check_local,
    common_root,
    image_files,
    relative_to,
)

REASONS = {
    "yolo_box_line_ignored": (SKIPPED, "detection line (class + box): no mask; label polygons"),
    "yolo_line_invalid": (SKIPPED, "line that is not a class and at least 3 x y pairs"),
    "yolo_class_out_of_range": (SKIPPED, "class index not in the names of data.yaml"),
    "yolo_not_normalized": (SKIPPED, "coordinates outside 0..1 (pixels instead of fractions of the size?)"),
    "yolo_image_unreadable": (SKIPPED, "image whose size cannot be read from its header"),
    "yolo_exif_rotated": (SKIPPED, "labelled image with an EXIF rotation (labels are for the rotated view)"),
    "yolo_image_only_unusable_lines": (SKIPPED, "every label line of the image was skipped; not a negative"),
}

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
SPLITS = ("train", "val", "test")
_TOLERANCE = 1e-3  # exporters round; 1.0004 is still a fraction of the size


def find_yaml(folder: str) -> str | None:
    for name in YAML_NAMES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def load_yolo(
    path: str, images_dir: str | None = None, names_file: str | None = None, split: str | None = None
) -> ImportedDataset:
    import yaml

    check_local(path, "the YOLO dataset")
    yaml_path = find_yaml(path) if os.path.isdir(path) else path
    if yaml_path is None or not os.path.isfile(yaml_path):
        raise ExportFormatError(f"{path}: no data.yaml; give the dataset YAML of an Ultralytics YOLO-seg export")
    if images_dir or names_file:
        raise ExportFormatError("--images and --names are not used with --format yolo: data.yaml says both")
    try:
        with open(yaml_path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        raise ExportFormatError(f"{yaml_path} cannot be read as YAML: {error}") from None
    if not isinstance(config, dict):
        raise ExportFormatError(f"{yaml_path}: expected a mapping with names and train/val paths")
    names = _names(config.get("names"), yaml_path)
    available = [s for s in SPLITS if config.get(s)]
    if split is None:
        if len(available) != 1:
            raise ExportFormatError(
                f"{yaml_path} has splits {', '.join(available) or 'none'}: pick one with --split "
                "(one --output folder per split)"
            )
        split = available[0]
    if split not in available:
        raise ExportFormatError(f"{yaml_path} has no split {split!r} (it has {', '.join(available) or 'none'})")

    base = _base_folder(config.get("path"), yaml_path)
    images = _split_images(config[split], base, yaml_path, split)
    builder = CocoBuilder("yolo", yaml_path, REASONS)
    category_of = {index: builder.category(name) for index, name in names.items()}
    missing = empty = 0
    for image_path in images:
        label_path = label_path_of(image_path)
        lines = None
        if os.path.isfile(label_path):
            with open(label_path, encoding="utf-8", errors="replace") as f:
                lines = [(n, line.split()) for n, line in enumerate(f.read().splitlines(), 1) if line.strip()]
        missing += lines is None
        empty += lines == []
        _import_image(image_path, label_path, lines or [], images, category_of, builder)
    builder.notes.append(
        f"split {split}: {missing} image(s) without a label file and {empty} with an empty one, kept as negatives"
    )
    root = common_root(images, base)
    for image in builder.images:  # file names were absolute until the root was known
        image["file_name"] = relative_to(image["file_name"], root)
    return builder.build(root, split=split)


def label_path_of(image_path: str) -> str:
    """Ultralytics' rule: the last `/images/` of the path becomes `/labels/`, the extension `.txt`."""
    head, sep, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    path = f"{head}{os.sep}labels{os.sep}{tail}" if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


def _import_image(image_path, label_path, lines, images, category_of, builder: CocoBuilder) -> None:
    from PIL import Image

    try:
        with Image.open(image_path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError) as error:
        builder.issue("yolo_image_unreadable", image_path, f"cannot be read ({error}); fix or remove it")
        return
    if lines and orientation not in (None, 1):
        builder.issue(
            "yolo_exif_rotated",
            image_path,
            f"EXIF orientation {orientation}: save the image with the rotation applied "
            "(e.g. PIL.ImageOps.exif_transpose) and label it again",
        )
        return
    polygons = []
    for number, values in lines:
        where = f"{label_path} line {number}"
        polygon = _read_line(values, where, width, height, category_of, builder)
        if polygon is not None:
            polygons.append(polygon)
    if lines and not polygons:
        builder.issue(
            "yolo_image_only_unusable_lines",
            label_path,
            "every line was skipped; the image is left out rather than written as a negative",
        )
        return
    image_id = builder.add_image(os.path.abspath(image_path), width, height)
    for category_id, points in polygons:
        builder.add_polygons(image_id, category_id, [points])


def _read_line(values, where, width, height, category_of, builder: CocoBuilder):
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        builder.issue("yolo_line_invalid", where, "not all values are numbers")
        return None
    if not all(math.isfinite(v) for v in numbers) or not numbers[0].is_integer():
        builder.issue("yolo_line_invalid", where, "the class must be an integer and coordinates finite")
        return None
    index, coordinates = int(numbers[0]), numbers[1:]
    if len(coordinates) == 4:
        builder.issue("yolo_box_line_ignored", where, "a box (class cx cy w h), not a polygon; label with polygons")
        return None
    if len(coordinates) < 6 or len(coordinates) % 2:
        builder.issue("yolo_line_invalid", where, f"{len(coordinates)} coordinates; a polygon needs x y pairs, >= 3")
        return None
    if index not in category_of:
        builder.issue(
            "yolo_class_out_of_range",
            where,
            f"class {index} is not in names (0..{max(category_of)}; YOLO classes start at 0)",
        )
        return None
    if min(coordinates) < -_TOLERANCE or max(coordinates) > 1 + _TOLERANCE:
        builder.issue(
            "yolo_not_normalized",
            where,
            f"coordinates up to {max(coordinates):g}; YOLO-seg wants x / width and y / height in 0..1",
        )
        return None
    points = [v * (width if n % 2 == 0 else height) for n, v in enumerate(coordinates)]
    return category_of[index], points


def _names(names, yaml_path: str) -> dict[int, str]:
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise ExportFormatError(f"{yaml_path}: 'names' must be a list or a {{index: name}} mapping of the classes")
    result = {}
    for index, name in names.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ExportFormatError(f"{yaml_path}: class index {index!r} in names must be an integer >= 0")
        if not isinstance(name, (str, int)) or not str(name).strip():
            raise ExportFormatError(f"{yaml_path}: class {index} has no name")
        result[index] = str(name).strip()
    duplicates = sorted({n for n in result.values() if list(result.values()).count(n) > 1})
    if duplicates:
        raise ExportFormatError(f"{yaml_path}: names lists {', '.join(map(repr, duplicates))} twice")
    return dict(sorted(result.items()))


def _base_folder(path_value, yaml_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(yaml_path))
    if isinstance(path_value, str) and path_value.strip():
        candidate = os.path.join(folder, os.path.expanduser(path_value))
        if os.path.isdir(candidate):
            return candidate
    return folder  # the YAML was moved with its data: its own folder is the dataset root


def _split_images(value, base: str, yaml_path: str, split: str) -> list[str]:
    entries = value if isinstance(value, list) else [value]
    images: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ExportFormatError(f"{yaml_path}: {split} must be a folder, a .txt list, or a list of these")
        location = _resolve(entry, base)
        if os.path.isdir(location):
            images.extend(image_files(location))
        elif os.path.isfile(location) and location.endswith(".txt"):
            with open(location, encoding="utf-8") as f:
                listed = [line.strip() for line in f if line.strip()]
            images.extend(_resolve(line, os.path.dirname(location)) for line in listed)
        else:
            raise ExportFormatError(
                f"{yaml_path}: {split}: {entry!r} -> {location} is neither a folder nor a .txt list of images"
            )
    if not images:
        raise ExportFormatError(f"{yaml_path}: {split}: no image found under {entries}")
    return sorted(dict.fromkeys(os.path.normpath(p) for p in images))


def _resolve(entry: str, base: str) -> str:
    location = os.path.normpath(os.path.join(base, entry))
    if not os.path.exists(location) and entry.startswith("../"):
        location = os.path.normpath(os.path.join(base, entry[3:]))  # Roboflow's data.yaml
    return location
