"""Benchmark: per-class evaluation vs plain pycocotools on the same detections.

    python benchmarks/per_class_eval.py [--repeats 3] [--write-docs]

Builds 5,000+ detections (boxes and RLE masks) from the COCO subset's validation
ground truth with perturbations (dropped objects, a class swap, jitter, duplicates,
false positives), then times, in one process and interleaved:
  plain:     loadRes + COCOeval evaluate/accumulate/summarize for bbox and segm
  per-class: tfmaskrcnn's evaluate() (the same COCOeval runs, per-class metrics,
             confusion matrix, collapse alarm; no report files)
and checks that both give identical overall numbers and that the per-class numbers
equal pycocotools' own per-class runs (params.catIds=[k]).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package
sys.path.insert(0, str(REPO / "tests"))  # the simulated detections are a test helper

from pycocotools.cocoeval import COCOeval  # noqa: E402
from simulated_detections import simulate_detections  # noqa: E402

from tfmaskrcnn.evaluation.evaluate import evaluate  # noqa: E402
from tfmaskrcnn.evaluation.groundtruth import load_coco_json  # noqa: E402

SECTION = "## Per-class evaluation"


def plain_pycocotools(coco_gt, detections):
    coco_dt = coco_gt.loadRes([dict(d) for d in detections])
    stats = {}
    for iou_type in ("bbox", "segm"):
        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        stats[iou_type] = [float(s) for s in coco_eval.stats]
    return stats, coco_dt


def ours(coco_gt, detections):
    return evaluate(coco_gt, detections, output_dir=None, progress=False)


def timed(fn, *args):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = fn(*args)
    return time.perf_counter() - start, result


def check_identical(coco_gt, coco_dt, plain_stats, metrics, sample_classes=8):
    for iou_type, prefix in (("bbox", "bbox"), ("segm", "mask")):
        overall = [v if v is not None else -1.0 for v in metrics["overall"][iou_type].values()]
        assert overall == plain_stats[iou_type], f"{iou_type} overall stats differ"
        rows = sorted(metrics["per_class"].values(), key=lambda r: -r["gt_instances"])[:sample_classes]
        for row in rows:
            reference = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            reference.params.catIds = [row["class_id"]]
            with contextlib.redirect_stdout(io.StringIO()):
                reference.evaluate()
                reference.accumulate()
                reference.summarize()
            for metric, index in (("AP", 0), ("AP50", 1), ("AP75", 2)):
                assert abs(row[f"{prefix}_{metric}"] - reference.stats[index]) <= 1e-6, (row["class"], metric)


def write_docs(text: str) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_docs import replace_section

    replace_section(SECTION, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args()

    data = pathlib.Path(os.environ.get("TFMASKRCNN_COCO_TINY", REPO / "tests" / "data" / "coco_tiny"))
    coco_gt = load_coco_json(str(data / "annotations" / "instances_val2017.json"))
    ids = {c["name"]: c["id"] for c in coco_gt.loadCats(coco_gt.getCatIds())}
    detections = simulate_detections(
        coco_gt,
        seed=0,
        drop_rate=0.1,
        box_jitter=0.05,
        copies=6,
        false_positives_per_image=12,
        class_swaps={ids["dog"]: ids["cat"]},
    )
    print(
        f"{len(detections)} detections on {len(coco_gt.getImgIds())} images, "
        f"{len(coco_gt.getCatIds())} classes, bbox + segm"
    )

    plain_times, our_times = [], []
    for _ in range(args.repeats):
        seconds, (plain_stats, coco_dt) = timed(plain_pycocotools, coco_gt, detections)
        plain_times.append(seconds)
        seconds, metrics = timed(ours, coco_gt, detections)
        our_times.append(seconds)
    check_identical(coco_gt, coco_dt, plain_stats, metrics)
    plain, mine = statistics.median(plain_times), statistics.median(our_times)
    ratio = mine / plain
    print(f"plain pycocotools (bbox+segm):             median {plain:.2f}s  runs {[round(t, 2) for t in plain_times]}")
    print(f"per-class evaluation (+confusion, alarm):  median {mine:.2f}s  runs {[round(t, 2) for t in our_times]}")
    print(f"ratio {ratio:.2f} (goal <= 1.2); overall stats identical, per-class AP equal to catIds=[k] runs")
    if args.write_docs:
        write_docs(
            f"{SECTION}\n\n"
            f"`python benchmarks/per_class_eval.py --repeats {args.repeats} --write-docs` "
            f"({len(detections)} detections with boxes and RLE masks on the {len(coco_gt.getImgIds())} validation "
            f"images of the COCO subset, {len(coco_gt.getCatIds())} classes; medians of {args.repeats} interleaved "
            "runs in one process on a 2-core CPU machine):\n\n"
            "| what | seconds |\n|---|---|\n"
            f"| plain pycocotools: loadRes + COCOeval evaluate/accumulate/summarize, bbox and segm | {plain:.2f} |\n"
            f"| tfmaskrcnn per-class evaluation: the same plus per-class AP/AP50/AP75/AR, confusion matrix, "
            f"collapse alarm | {mine:.2f} |\n"
            f"| ratio | {ratio:.2f} (goal <= 1.2) |\n\n"
            "Both give identical overall COCO stats, and the per-class AP equals pycocotools' own per-class "
            "runs (`params.catIds=[k]`) to 1e-6: per-class numbers are read from the one all-class run.\n"
        )
    return 0 if ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
