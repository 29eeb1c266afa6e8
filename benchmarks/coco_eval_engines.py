"""Benchmark: the two COCOeval engines of the evaluator on a COCO-scale detection set.

    python benchmarks/coco_eval_engines.py                       # 5,000 images, 100,000 detections
    python benchmarks/coco_eval_engines.py --images 1000 --detections-per-image 20

Builds synthetic ground truth (no download): `--images` images of 640x480 with
`--objects-per-image` objects on average (COCO val2017: 5,000 images, 7.3 objects each,
80 classes), each a random polygon (an ellipse of 12-24 vertices) stored as RLE. Detections
(`--detections-per-image`, COCO's limit is 100) are jittered copies of the objects (some with
the wrong class) plus false positives, each with a box and an RLE mask, as
tests/simulated_detections.py makes them. Then times, for each engine and IoU type,
`per_class.run_coco_eval` (evaluate + accumulate + summarize, what the evaluator runs)
on the same loaded results, and checks that the per-class numbers agree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from pycocotools import mask as mask_utils  # noqa: E402

from tfmaskrcnn.evaluation import per_class  # noqa: E402
from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset  # noqa: E402


def _polygon(rng, cx, cy, rx, ry) -> list[float]:
    count = int(rng.integers(12, 25))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radius = rng.uniform(0.75, 1.0, count)
    xs, ys = cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)
    return np.stack([xs, ys], axis=1).ravel().round(2).tolist()


def _rle(polygon: list[float], height: int, width: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    rle["counts"] = rle["counts"].decode()
    return rle


def synthetic_set(
    images: int, objects_per_image: float, detections_per_image: int, classes: int, seed: int
) -> tuple[dict, list[dict]]:
    """(ground truth dataset, COCO results): RLE masks everywhere, boxes from the masks."""
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    dataset = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, classes + 1)],
    }
    detections = []
    for image_id in range(1, images + 1):
        dataset["images"].append({"id": image_id, "height": height, "width": width})
        objects = []
        for _ in range(max(1, int(rng.poisson(objects_per_image)))):
            # Sizes from small to large (COCO's area ranges all get objects).
            rx, ry = np.exp(rng.uniform(np.log(4), np.log(160), 2))
            cx, cy = rng.uniform(rx, width - rx), rng.uniform(min(ry, height / 2), max(height - ry, height / 2))
            category = int(rng.integers(1, classes + 1))
            polygon = _polygon(rng, cx, cy, rx, ry)
            rle = _rle(polygon, height, width)
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
            objects.append((cx, cy, rx, ry, category))
        for n in range(detections_per_image):
            if n < 3 * len(objects):  # up to three detections per object, then false positives
                cx, cy, rx, ry, category = objects[n % len(objects)]
                jitter = 0.1 * (1 + n // len(objects))
                cx, cy = cx + rng.normal(0, jitter) * rx, cy + rng.normal(0, jitter) * ry
                rx, ry = rx * rng.uniform(1 - jitter, 1 + jitter), ry * rng.uniform(1 - jitter, 1 + jitter)
                if rng.random() < 0.15:
                    category = int(rng.integers(1, classes + 1))
                score = rng.uniform(0.3, 1.0) / (1 + n // len(objects))
            else:
                rx, ry = np.exp(rng.uniform(np.log(4), np.log(120), 2))
                cx, cy = rng.uniform(0, width), rng.uniform(0, height)
                category, score = int(rng.integers(1, classes + 1)), rng.uniform(0.01, 0.5)
            rle = _rle(_polygon(rng, cx, cy, rx, ry), height, width)
            box = mask_utils.toBbox(rle).tolist()
            if box[2] < 1 or box[3] < 1:  # clipped off the image
                box = [float(np.clip(cx, 0, width - 2)), float(np.clip(cy, 0, height - 2)), 1.0, 1.0]
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [round(v, 2) for v in box],
                    "score": round(float(score), 5),
                    "segmentation": rle,
                }
            )
    return dataset, detections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--objects-per-image", type=float, default=7.3)
    parser.add_argument("--detections-per-image", type=int, default=20, help="default 20: 100,000 at 5,000 images")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    parser.add_argument("--engines", nargs="+", default=list(per_class.ENGINES), choices=per_class.ENGINES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    dataset, detections = synthetic_set(
        args.images, args.objects_per_image, args.detections_per_image, args.classes, args.seed
    )
    coco_gt = coco_from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
    print(
        f"{len(dataset['images'])} images, {len(dataset['annotations'])} objects, {len(detections)} detections "
        f"with masks, {args.classes} classes (built in {time.perf_counter() - start:.1f} s)"
    )
    print(f"python {platform.python_version()}, {platform.processor() or platform.machine()}")
    times: dict[tuple[str, str], float] = {}
    results: dict[tuple[str, str], dict] = {}
    for iou_type in args.iou_types:
        for engine in args.engines:
            start = time.perf_counter()
            coco_eval, _ = per_class.run_coco_eval(coco_gt, coco_dt, iou_type, engine=engine)
            times[engine, iou_type] = time.perf_counter() - start
            results[engine, iou_type] = per_class.per_class_metrics(coco_eval)
            print(
                f"  {engine:<17} {iou_type:<5} {times[engine, iou_type]:8.1f} s   AP {coco_eval.stats[0]:.4f}",
                flush=True,
            )

    print()
    header = f"| IoU type | {' | '.join(args.engines)} |"
    if len(args.engines) == 2:
        header += " speed-up | max per-class difference |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for iou_type in args.iou_types:
        cells = [f"{times[e, iou_type]:.1f} s" for e in args.engines]
        if len(args.engines) == 2:
            a, b = (results[e, iou_type] for e in args.engines)
            diff = max(
                abs(a[k][m] - b[k][m]) if a[k][m] is not None else float(b[k][m] is not None)
                for k in a
                for m in per_class.PER_CLASS_METRICS
            )
            cells += [f"{times[args.engines[0], iou_type] / times[args.engines[1], iou_type]:.1f}x", f"{diff:.1e}"]
        print(f"| {iou_type} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
