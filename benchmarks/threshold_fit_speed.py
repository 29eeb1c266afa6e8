"""Benchmark: how long `calibrate --thresholds` takes to fit, beside the evaluation of the same detections.

    TFMASKRCNN_COCO_TINY=path/to/coco_tiny python benchmarks/threshold_fit_speed.py [--repeats 3]

On the COCO subset's validation ground truth (80 classes) with simulated detections (dropped
objects, a class swap, jitter, duplicates, false positives: benchmarks/per_class_eval.py's set),
times in one process: the match table (every detection's IoUs, computed once), the fit by each
rule (`f1` with the default --evidence, `precision:0.8`), and tfmaskrcnn's evaluate() of the same
detections, the step calibrate runs anyway, as the yardstick. Prints seconds and the ratios.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the simulated detections are a test helper

from simulated_detections import simulate_detections  # noqa: E402

from tfmaskrcnn.evaluation import operating_points  # noqa: E402
from tfmaskrcnn.evaluation.confusion import MatchTable  # noqa: E402
from tfmaskrcnn.evaluation.evaluate import evaluate  # noqa: E402
from tfmaskrcnn.evaluation.groundtruth import load_coco_json  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-objects", type=int, default=1, help="1 (default): every class is fitted, the most work")
    args = parser.parse_args()

    data = pathlib.Path(os.environ.get("TFMASKRCNN_COCO_TINY", REPO / "tests" / "data" / "coco_tiny"))
    coco_gt = load_coco_json(str(data / "annotations" / "instances_val2017.json"))
    ids = {c["name"]: c["id"] for c in coco_gt.loadCats(coco_gt.getCatIds())}
    detections = simulate_detections(
        coco_gt, seed=0, drop_rate=0.1, box_jitter=0.05, copies=6, false_positives_per_image=12,
        class_swaps={ids["dog"]: ids["cat"]},
    )  # fmt: skip
    categories = sorted(coco_gt.getCatIds())
    print(f"{len(detections)} detections on {len(coco_gt.getImgIds())} images, {len(categories)} classes, boxes")

    times = {"match table": [], "fit f1": [], "fit precision:0.8": [], "evaluate (yardstick)": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        table = MatchTable(coco_gt, detections, categories)
        times["match table"].append(time.perf_counter() - start)
        for rule in ("f1", "precision:0.8"):
            start = time.perf_counter()
            details = operating_points.fit_thresholds(
                table, operating_points.parse_rule(rule), 0.5, min_objects=args.min_objects
            )
            times[f"fit {rule}"].append(time.perf_counter() - start)
            moved = sum(not d["fallback"] for d in details)
            print(f"  {rule}: {moved} of {len(details)} classes off the global threshold")
        start = time.perf_counter()
        evaluate(coco_gt, detections, output_dir=None, progress=False)
        times["evaluate (yardstick)"].append(time.perf_counter() - start)

    yardstick = statistics.median(times["evaluate (yardstick)"])
    print(f"median of {args.repeats} (seconds, and / evaluate):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:22s} {median:7.2f} s  {median / yardstick:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
