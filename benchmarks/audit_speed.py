"""Benchmark: images per second of `tfmaskrcnn audit` on the COCO subset (the checks, then the report files).

    python benchmarks/audit_speed.py [--data COCO_SUBSET_DIR] [--repeats 5] [--workers 1 2]

Audits the training split (80 photos, 705 annotations) with the validation split's
categories compared, against the smallest anchor of `tfmaskrcnn_r50fpn_gpu` (32 px at 1024).
One warm-up pass (imports, the page cache) is not timed; then, for each repeat, one
pass per worker count, interleaved, so that load changes hit every setting alike. Prints
the median and the best images/s of the audit pass (JSON read, every check, every image
decoded) per worker count, then the time of writing the report (audit.json, histogram,
80 sample grids, report.html), which is separate: `--samples-per-class 0` skips the grids.
The machine's load average is printed too: wall-clock figures are only as good as the idle
cores. Images per CPU-second (process CPU time of all threads) do not depend on other
processes: one idle core does that many images per second.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from tfmaskrcnn.data import audit  # noqa: E402
from tfmaskrcnn.diagnostics.audit_report import write_audit_report  # noqa: E402

R50_ANCHOR = audit.AnchorCheck("tfmaskrcnn_r50fpn_gpu", smallest_anchor=32.0, input_size=(1024, 1024))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(REPO / "tests" / "data" / "coco_tiny"),
        help="a COCO-2017 subset folder (annotations/, train2017/, val2017/); default: the repository's own",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    data = pathlib.Path(args.data)
    annotations = str(data / "annotations" / "instances_train2017.json")
    val = str(data / "annotations" / "instances_val2017.json")
    images = str(data / "train2017")

    def run(workers: int) -> audit.AuditResult:
        return audit.audit_coco(annotations, images, val, anchor=R50_ANCHOR, workers=workers, progress=False)

    result = run(max(args.workers))  # warm-up
    rates: dict[int, list[float]] = {w: [] for w in args.workers}
    cpu_rates: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.repeats):
        for workers in args.workers:
            cpu = time.process_time()  # CPU seconds of all threads: independent of other processes' load
            result = run(workers)
            cpu = time.process_time() - cpu
            rates[workers].append(result.num_images / result.seconds)
            cpu_rates[workers].append(result.num_images / cpu)
    print(
        f"audit pass: {result.num_images} images, {result.num_annotations} annotations, {len(result.names)} classes, "
        f"{len(result.findings)} findings ({result.counts}); {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for workers, values in rates.items():
        print(
            f"  workers={workers}: median {statistics.median(values):.0f} images/s, best {max(values):.0f} "
            f"(runs: {', '.join(f'{v:.0f}' for v in values)}); "
            f"{statistics.median(cpu_rates[workers]):.0f} images per CPU-second"
        )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        write_audit_report(result, out, progress=False)
        report_seconds = time.perf_counter() - start
        grids = len(list(pathlib.Path(out, "samples").glob("*.png")))
    print(f"report files (audit.json, histogram, {grids} sample grids, report.html): {report_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
