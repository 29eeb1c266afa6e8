"""One small dataset, written the way each labelling tool writes it (test helper).

`make_dataset()` draws a few images with several classes, instances whose boxes overlap
(a "U" with a square in its opening, a triangle against a bar) and negative images.
`write_coco`, `write_labelme`, `write_cvat`, `write_yolo` and `write_voc` lay the same
objects out in each tool's folder structure and file format, so that converting every
export must give the same records.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import yaml
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

CLASSES = ("cat", "dog", "bird")
WIDTH, HEIGHT = 96, 80  # not square, so a swapped width/height shows


@dataclasses.dataclass
class Obj:
    name: str
    polygon: list[tuple[float, float]]
    as_mask: bool = False  # written as a raster mask where the format has one (CVAT <mask>)

    @property
    def flat(self) -> list[float]:
        return [float(v) for point in self.polygon for v in point]

    def raster(self, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([self.flat], height, width)))


@dataclasses.dataclass
class Img:
    stem: str
    objects: list[Obj]
    pixels: np.ndarray


def _u_shape(x, y, w, h, t):
    return [(x, y), (x + t, y), (x + t, y + h - t), (x + w - t, y + h - t), (x + w - t, y), (x + w, y),
            (x + w, y + h), (x, y + h)]  # fmt: skip


def _rect(x, y, w, h):
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def make_dataset(num_images: int = 10, num_negative: int = 3, seed: int = 0) -> list[Img]:
    """`num_images` images, the last `num_negative` without objects (30% by default)."""
    rng = np.random.default_rng(seed)
    images = []
    for n in range(num_images):
        objects = []
        if n < num_images - num_negative:
            # Offsets of .3, not .5: a vertex exactly on a pixel's decision line flips a whole column
            # with any rounding (YOLO's 6 decimals), which no real label does on purpose.
            dx, dy = float(rng.integers(0, 12)) + 0.3 * (n % 2), float(rng.integers(0, 10))
            first, second, third = (CLASSES[(n + k) % len(CLASSES)] for k in range(3))
            objects = [
                Obj(first, _u_shape(8 + dx, 10 + dy, 40, 36, 9)),
                Obj(second, _rect(20.3 + dx, 14 + dy, 16, 20), as_mask=(n == 0)),  # inside the U's box
                Obj(third, [(60 + dx, 40 + dy), (88, 70), (58 + dx, 72)]),
                Obj(first, _rect(62, 8 + dy, 24, 10.3)),  # the bar the triangle's box reaches
            ]
            if n % 3 == 2:
                objects = objects[:2]
        pixels = rng.integers(0, 60, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        for k, obj in enumerate(objects):
            colour = [(220, 60, 60), (60, 200, 80), (70, 90, 230)][CLASSES.index(obj.name)]
            draw.polygon(obj.polygon, fill=tuple(int(c) - 10 * k for c in colour))
        images.append(Img(f"img_{n:02d}", objects, np.asarray(canvas)))
    return images


def _save(image: Img, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.pixels).save(path)


def write_coco(root: pathlib.Path, images: list[Img]) -> tuple[pathlib.Path, pathlib.Path]:
    """(annotations JSON, image folder)."""
    data = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for image_id, image in enumerate(images, 1):
        _save(image, root / "images" / f"{image.stem}.png")
        data["images"].append({"id": image_id, "file_name": f"{image.stem}.png", "width": WIDTH, "height": HEIGHT})
        for obj in image.objects:
            xs, ys = obj.flat[0::2], obj.flat[1::2]
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": CLASSES.index(obj.name) + 1,
                    "segmentation": [obj.flat],
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                    "area": float(obj.raster().sum()),
                    "iscrowd": 0,
                }
            )
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json", root / "images"


def labelme_shape(label, points, shape_type="polygon", group_id=None) -> dict:
    return {
        "label": label,
        "points": [list(p) for p in points],
        "group_id": group_id,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
    }


def write_labelme_file(folder: pathlib.Path, stem: str, shapes: list[dict], image_path: str | None = None) -> None:
    document = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path or f"{stem}.png",
        "imageData": None,
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
    }
    (folder / f"{stem}.json").write_text(json.dumps(document, indent=2))


def write_labelme(root: pathlib.Path, images: list[Img]) -> pathlib.Path:
    """One JSON beside each image, as Labelme saves them; a negative has a JSON with no shape."""
    for image in images:
        _save(image, root / f"{image.stem}.png")
        write_labelme_file(root, image.stem, [labelme_shape(o.name, o.polygon) for o in image.objects])
    return root


def cvat_rle(mask: np.ndarray) -> tuple[str, int, int, int, int]:
    """CVAT's mask encoding: run lengths over the tight box, row by row, starting with background."""
    ys, xs = np.nonzero(mask)
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    flat = mask[top:bottom, left:right].ravel()
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return ", ".join(map(str, runs)), int(left), int(top), int(right - left), int(bottom - top)


def cvat_document(images_xml: list[str], labels=CLASSES) -> str:
    labels_xml = "".join(f"<label><name>{n}</name><type>any</type><attributes/></label>" for n in labels)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><id>7</id>'
        f"<name>pets</name><mode>annotation</mode><labels>{labels_xml}</labels></task></meta>"
        + "".join(images_xml)
        + "</annotations>"
    )


def write_cvat(root: pathlib.Path, images: list[Img]) -> pathlib.Path:
    """`annotations.xml` with `images/` beside it, as CVAT's 'CVAT for images 1.1' export."""
    elements = []
    for n, image in enumerate(images):
        _save(image, root / "images" / f"{image.stem}.png")
        shapes = []
        for z, obj in enumerate(image.objects):
            if obj.as_mask:
                rle, left, top, width, height = cvat_rle(obj.raster())
                shapes.append(
                    f'<mask label="{obj.name}" source="manual" occluded="0" rle="{rle}" left="{left}" '
                    f'top="{top}" width="{width}" height="{height}" z_order="{z}"></mask>'
                )
            else:
                points = ";".join(f"{x:.2f},{y:.2f}" for x, y in obj.polygon)
                shapes.append(
                    f'<polygon label="{obj.name}" source="manual" occluded="0" points="{points}" z_order="{z}"/>'
                )
        elements.append(
            f'<image id="{n}" name="{image.stem}.png" width="{WIDTH}" height="{HEIGHT}">{"".join(shapes)}</image>'
        )
    (root / "annotations.xml").write_text(cvat_document(elements))
    return root / "annotations.xml"


def write_yolo(root: pathlib.Path, images: list[Img], names_as_dict: bool = False) -> pathlib.Path:
    """data.yaml + images/train + labels/train; negatives: one without a label file, the others empty."""
    negatives = 0
    for image in images:
        _save(image, root / "images" / "train" / f"{image.stem}.png")
        lines = [
            " ".join([str(CLASSES.index(o.name))] + [f"{x / WIDTH:.6f} {y / HEIGHT:.6f}" for x, y in o.polygon])
            for o in image.objects
        ]
        if not lines:
            negatives += 1
            if negatives == 1:
                continue  # no label file at all: Ultralytics' background image
        label = root / "labels" / "train" / f"{image.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines))
    names = dict(enumerate(CLASSES)) if names_as_dict else list(CLASSES)
    config = {"path": ".", "train": "images/train", "val": "images/train", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "data.yaml"


VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [64] * (3 * 250) + [224, 224, 192]


def _palette_png(array: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette(VOC_PALETTE)
    image.save(path)


def write_voc(root: pathlib.Path, images: list[Img]) -> pathlib.Path:
    """JPEGImages (PNG photos here, for exact pixels), SegmentationObject/Class with a void band, labelmap.txt."""
    for image in images:
        _save(image, root / "JPEGImages" / f"{image.stem}.png")
        objects = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        classes = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        void = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for k, obj in enumerate(image.objects, 1):
            mask = obj.raster().astype(bool)
            objects[mask] = k
            classes[mask] = CLASSES.index(obj.name) + 1
            grown = mask.copy()  # VOC's void band: the pixels around the object's outline
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            void |= grown & ~mask
        band = void & (objects == 0)
        objects[band], classes[band] = 255, 255
        _palette_png(objects, root / "SegmentationObject" / f"{image.stem}.png")
        _palette_png(classes, root / "SegmentationClass" / f"{image.stem}.png")
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("".join(f"{image.stem}\n" for image in images))
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
        + "".join(f"{name}:{128 * (i % 2)},{64 * i},0::\n" for i, name in enumerate(CLASSES, 1))
    )
    return root


def write_all(root: pathlib.Path, images: list[Img]) -> dict[str, dict]:
    """Every export of `images` under `root`: {format: {"annotations": path, "images": folder or None, ...}}."""
    coco_json, coco_images = write_coco(root / "coco", images)
    return {
        "coco": {"annotations": str(coco_json), "images": str(coco_images)},
        "labelme": {"annotations": str(write_labelme(root / "labelme", images))},
        "cvat": {"annotations": str(write_cvat(root / "cvat", images))},
        "yolo": {"annotations": str(write_yolo(root / "yolo", images)), "split": "train"},
        "voc": {"annotations": str(write_voc(root / "voc", images)), "split": "train"},
    }
