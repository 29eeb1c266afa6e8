"""Pascal VOC instance segmentation: `SegmentationObject/*.png` + `SegmentationClass/*.png`.

Both PNGs are palette images whose pixel values are indices: in `SegmentationObject`
0 is background and 1, 2, ... are the instances of the image; in `SegmentationClass`
the value is the class index (0 background). Decisions:

* 255 is "void" (the band VOC draws around every object, and regions too hard to
  label): it is never an instance and never a class, and void pixels belong to no mask.
* An instance's class is the class of its pixels; when they disagree (a damaged PNG),
  the most frequent class is taken and counted (`voc_instance_class_mixed`).
* Classes: `--names FILE`, else a `labelmap.txt` in the dataset folder (as CVAT and
  Datumaro write it), else the 20 VOC classes. Line k is palette index k, so line 0 is
  the background and is not a class (a first `__ignore__` line, as in Labelme's
  labels.txt, is left out). Every listed class is declared, used or not, so every split
  gets the same label map.
* Images: `--split NAME` reads `ImageSets/Segmentation/NAME.txt`; without it, every PNG
  of `SegmentationObject`. The photo is `JPEGImages/<name>.<jpg|png|...>` (or under
  `--images`). An object PNG with no instance is a negative and is kept.
* A PNG saved as RGB (palette lost by an editor) is skipped with the fix.
"""

from __future__ import annotations

import os

import numpy as np

from tfmaskrcnn.data.formats.base import (
    CONVERTED,
    IMAGE_EXTENSIONS,
    SKIPPED,
    CocoBuilder,
    ExportFormatError,
    ImportedDataset,
    check_local,
    read_names_file,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOID = 255

REASONS = {
    "voc_object_png_missing": (SKIPPED, "image listed in the split file without a SegmentationObject PNG"),
    "voc_class_png_missing": (SKIPPED, "SegmentationObject PNG without its SegmentationClass PNG"),
    "voc_png_unreadable": (SKIPPED, "PNG that cannot be read, or object and class PNG of different sizes"),
    "voc_png_not_indexed": (SKIPPED, "PNG saved as RGB: its palette indices are lost"),
    "voc_instance_without_class": (SKIPPED, "instance whose pixels are all background or void in the class PNG"),
    "voc_class_index_unknown": (SKIPPED, "class index beyond the class list"),
    "voc_instance_class_mixed": (CONVERTED, "instance with pixels of several classes: the most frequent kept"),
}


def is_voc_folder(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "SegmentationObject"))


def load_voc(
    path: str, images_dir: str | None = None, names_file: str | None = None, split: str | None = None
) -> ImportedDataset:
    check_local(path, "the VOC folder")
    if not is_voc_folder(path):
        raise ExportFormatError(
            f"{path} has no SegmentationObject folder; give the VOC folder that holds SegmentationObject, "
            "SegmentationClass and JPEGImages (e.g. VOCdevkit/VOC2012)"
        )
    names, names_source = _class_list(path, names_file)
    builder = CocoBuilder("voc", path, REASONS)
    for name in names[1:]:
        builder.category(name)
    builder.notes.append(f"classes from {names_source}: palette index k is line k, index 0 the background")
    images_dir = images_dir or os.path.join(path, "JPEGImages")

    object_dir = os.path.join(path, "SegmentationObject")
    if split is not None:
        split_file = os.path.join(path, "ImageSets", "Segmentation", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise ExportFormatError(f"{split_file} not found (--split {split}); list the image names, one per line")
        with open(split_file, encoding="utf-8") as f:
            stems = [line.split()[0] for line in f if line.strip()]
    else:
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(object_dir) if n.lower().endswith(".png"))
    for stem in stems:
        _import_image(path, stem, images_dir, names, builder)
    return builder.build(images_dir, split=split)


def _class_list(path: str, names_file: str | None) -> tuple[list[str], str]:
    labelmap = os.path.join(path, "labelmap.txt")
    if names_file or os.path.isfile(labelmap):
        source = names_file or labelmap
        names = read_names_file(source)
        if names[0] == "__ignore__":
            names = names[1:]
        if len(names) < 2:
            raise ExportFormatError(f"{source}: line 0 is the background; list the classes after it, one per line")
        return names, source
    return ["background", *VOC_CLASSES], "the 20 Pascal VOC classes (give --names FILE for others)"


def _import_image(path: str, stem: str, images_dir: str, names: list[str], builder: CocoBuilder) -> None:
    from PIL import Image

    object_png = os.path.join(path, "SegmentationObject", f"{stem}.png")
    class_png = os.path.join(path, "SegmentationClass", f"{stem}.png")
    if not os.path.isfile(object_png):
        builder.issue("voc_object_png_missing", object_png, "listed in the split file but missing")
        return
    if not os.path.isfile(class_png):
        builder.issue("voc_class_png_missing", class_png, "missing; each object PNG needs its class PNG")
        return
    arrays = []
    for png in (object_png, class_png):
        try:
            with Image.open(png) as image:
                if image.mode not in ("P", "L"):
                    builder.issue(
                        "voc_png_not_indexed",
                        png,
                        f"mode {image.mode}: save it as a palette (indexed) PNG; RGB colours are not class indices",
                    )
                    return
                arrays.append(np.asarray(image))
        except (OSError, ValueError) as error:
            builder.issue("voc_png_unreadable", png, f"cannot be read ({error})")
            return
    objects, classes = arrays
    if objects.shape != classes.shape:
        builder.issue(
            "voc_png_unreadable", class_png, f"size {classes.shape} differs from its object PNG {objects.shape}"
        )
        return
    height, width = objects.shape
    image_id = builder.add_image(_image_name(images_dir, stem), width, height)
    for instance in np.unique(objects):
        if instance in (0, VOID):
            continue
        mask = objects == instance
        where = f"{object_png} instance {int(instance)}"
        values = classes[mask]
        values = values[(values != 0) & (values != VOID)]
        if values.size == 0:
            builder.issue("voc_instance_without_class", where, "its pixels are background or void in the class PNG")
            continue
        counts = np.bincount(values)
        class_index = int(np.argmax(counts))
        if np.count_nonzero(counts) > 1:
            builder.issue(
                "voc_instance_class_mixed", where, f"classes {np.flatnonzero(counts).tolist()}; kept {class_index}"
            )
        if class_index >= len(names):
            builder.issue(
                "voc_class_index_unknown",
                where,
                f"class index {class_index}, but the class list has {len(names) - 1} classes; give --names FILE",
            )
            continue
        builder.add_mask(image_id, builder.categories[names[class_index]], mask)


def _image_name(images_dir: str, stem: str) -> str:
    for extension in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        if os.path.isfile(os.path.join(images_dir, stem + extension)):
            return stem + extension
    return stem + ".jpg"  # missing: the converter skips it as image_missing, naming the path
