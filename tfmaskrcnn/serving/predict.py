"""`tfmaskrcnn predict`: run an exported SavedModel on image files.

    tfmaskrcnn predict --saved_model exported/shapes photos/ extra.jpg --output pred_out \\
        [--score_threshold 0.5]

An export with per-class score thresholds (`tfmaskrcnn calibrate --thresholds`, then export)
returns decisions; they are written as they come (no global threshold unless --score_threshold
is given, which then is a floor on top). An export of raw scores is cut at 0.5 by default.

Writes `OUT/detections.json` (COCO results: image_id, file_name, category_id = the COCO id
of the label map, category_name, bbox [x, y, w, h] in original pixels, score, segmentation
as compressed RLE) and one overlay `OUT/<stem>.png` per image. image_id is the file stem
when it is a number (COCO's 000000139.jpg -> 139), else the file's position in the list.
A file that cannot be read (corrupt, not an image, too small, too large) is reported and
skipped; the exit code is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import warnings
from typing import Optional, Sequence

import numpy as np

from tfmaskrcnn.io import write_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MIN_SIDE = 8
DEFAULT_MAX_MEGAPIXELS = 50.0
DEFAULT_SCORE_THRESHOLD = 0.5  # for exports of raw scores


class ImageError(ValueError):
    """An input file that cannot be used; the message says why and what to do."""


@dataclasses.dataclass
class PredictResult:
    detections: list
    images: int
    failures: dict  # path -> message


def find_images(inputs: Sequence[str]) -> list:
    """Files named directly are taken as they are (so a wrong one gets an error); folders
    contribute their image files, sorted."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(
                sorted(os.path.join(item, name) for name in os.listdir(item) if name.lower().endswith(IMAGE_EXTENSIONS))
            )
        else:
            paths.append(item)
    return paths


def load_image(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises ImageError with the reason and the fix."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ImageError("file not found")
    # Our own size limit replaces Pillow's decompression-bomb guard, which would fire later
    # with a less useful message; the header is read before any pixel is decoded.
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_megapixels * 1e6:
                    raise ImageError(
                        f"image is {width}x{height} ({width * height / 1e6:.1f} MP), above the limit of "
                        f"{max_megapixels:g} MP; resize it or raise --max_megapixels"
                    )
                if min(width, height) < MIN_SIDE:
                    raise ImageError(f"image is {width}x{height}; both sides must be at least {MIN_SIDE} pixels")
                return np.asarray(image.convert("RGB"))
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for broken files  # pylint: disable=broad-except
        kind = "not an image Pillow can read" if "cannot identify" in str(e) else "corrupt or truncated image"
        raise ImageError(f"{kind} ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _image_ids(paths: Sequence[str]) -> list:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    ids = [int(s) if s.isdigit() else i for i, s in enumerate(stems)]
    if len(set(ids)) != len(ids):  # numeric stems collide with positions: use positions for all
        ids = list(range(len(paths)))
    return ids


def _overlay_names(paths: Sequence[str]) -> list:
    names, seen = [], set()
    for i, path in enumerate(paths):
        stem = os.path.splitext(os.path.basename(path))[0]
        name = f"{stem}.png" if stem not in seen else f"{stem}_{i}.png"
        seen.add(stem)
        names.append(name)
    return names


def draw_overlay(image: np.ndarray, results: Sequence[dict]) -> bytes:
    """PNG of the image with each detection's mask, box, class name and score."""
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    canvas = image.astype(np.float32)
    colors = _palette(len(results))
    for result, color in zip(results, colors):
        mask = mask_utils.decode(result["segmentation"]).astype(bool)
        canvas[mask] = 0.55 * canvas[mask] + 0.45 * np.array(color, np.float32)
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for result, color in zip(results, colors):
        x, y, w, h = result["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=tuple(color), width=2)
        label = f"{result['category_name']} {result['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), label)
        text_y = max(0, y - (bottom - top) - 2)
        draw.rectangle([x, text_y, x + (right - left) + 4, text_y + (bottom - top) + 2], fill=tuple(color))
        draw.text((x + 2, text_y), label, fill=(0, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _palette(count: int) -> list:
    import colorsys

    return [[int(255 * c) for c in colorsys.hsv_to_rgb((0.61803 * i) % 1.0, 0.75, 1.0)] for i in range(count)]


def predict(
    saved_model: str,
    inputs: Sequence[str],
    output_dir: str,
    score_threshold: Optional[float] = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    overlays: bool = True,
    progress: bool = True,
    detector=None,
) -> PredictResult:
    """Runs the SavedModel on `inputs` (files and folders); writes detections.json and overlays.

    score_threshold: None keeps the export's decisions (its per-class thresholds) as they are, and
    cuts an export of raw scores at DEFAULT_SCORE_THRESHOLD; a number is a floor for both."""
    from tqdm import tqdm

    from tfmaskrcnn.serving import detector as inference

    detector = detector or inference.SavedModelDetector(saved_model)
    label_map = detector.label_map
    score_threshold = effective_score_threshold(detector, score_threshold)
    paths = find_images(inputs)
    if not paths:
        raise ImageError(f"no image files in {list(inputs)} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    os.makedirs(output_dir, exist_ok=True)
    image_ids, overlay_names = _image_ids(paths), _overlay_names(paths)
    detections, failures = [], {}
    for path, image_id, overlay_name in tqdm(
        list(zip(paths, image_ids, overlay_names)), desc="predicting", unit=" images", disable=not progress
    ):
        try:
            image = load_image(path, max_megapixels)
        except ImageError as e:
            failures[path] = str(e)
            tqdm.write(f"{path}: skipped: {e}", file=sys.stderr)
            continue
        found = inference.to_coco_results(
            detector(image),
            image_id,
            image.shape[0],
            image.shape[1],
            label_map.coco_ids,
            score_threshold,
            names=label_map.names,
            extra={"file_name": os.path.basename(path)},
        )
        detections.extend(found)
        if overlays:
            write_atomic(os.path.join(output_dir, overlay_name), draw_overlay(image, found))
    write_atomic(os.path.join(output_dir, "detections.json"), (json.dumps(detections) + "\n").encode())
    return PredictResult(detections=detections, images=len(paths) - len(failures), failures=failures)


def effective_score_threshold(detector, score_threshold: Optional[float]) -> float:
    """The global floor applied after the export: none over an export's decisions unless asked."""
    if score_threshold is not None:
        return float(score_threshold)
    return 0.0 if getattr(detector, "score_thresholds", None) is not None else DEFAULT_SCORE_THRESHOLD


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--saved_model", required=True, help="folder written by `tfmaskrcnn export`")
    parser.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR", help="image files and/or folders")
    parser.add_argument("--output", required=True, metavar="OUT", help="folder for detections.json and overlays")
    parser.add_argument(
        "--score_threshold",
        type=float,
        default=None,
        help="keep detections at or above this score (default: the export's per-class thresholds when it has "
        f"them, else {DEFAULT_SCORE_THRESHOLD:g})",
    )
    parser.add_argument(
        "--max_megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help=f"refuse larger images (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    parser.add_argument("--no_overlays", action="store_true", help="write detections.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        from tfmaskrcnn.serving import detector as inference

        detector = inference.SavedModelDetector(args.saved_model)
        threshold = effective_score_threshold(detector, args.score_threshold)
        per_class = getattr(detector, "score_thresholds", None)
        if per_class is not None:
            print(
                "per-class score thresholds of the export: "
                + ", ".join(f"{n} {t:.3g}" for n, t in zip(detector.label_map.names, per_class))
                + (f" (and --score_threshold {threshold:g} on top)" if args.score_threshold is not None else "")
            )
        result = predict(
            args.saved_model,
            args.images,
            args.output,
            args.score_threshold,
            args.max_megapixels,
            overlays=not args.no_overlays,
            progress=not args.quiet,
            detector=detector,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"tfmaskrcnn predict: error: {e}", file=sys.stderr)
        return 2
    what = "decisions" if per_class is not None else "detections"
    print(
        f"{result.images} images, {len(result.detections)} {what} at score >= "
        f"{threshold:g}{' and their class threshold' if what == 'decisions' else ''} "
        f"-> {os.path.join(args.output, 'detections.json')}"
    )
    if result.failures:
        print(f"{len(result.failures)} file(s) failed:", file=sys.stderr)
        for path, message in result.failures.items():
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0
