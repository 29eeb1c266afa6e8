"""Benchmark: images/s, annotations/s and peak memory of `tfmaskrcnn convert` on a Roboflow COCO export.

    python benchmarks/convert_speed.py [--data CAR_DAMAGE_DIR] [--workers 1 2] [--repeats 3] [--write-docs]

Converts every split folder of the export (`train/`, `valid/`, `test/`, each with Roboflow's
`_annotations.coco.json` beside its photos) with the converter's own entry point, as
`tfmaskrcnn convert --annotations SPLIT/_annotations.coco.json --images SPLIT` does. Without
`--data` it reads the repository's car-damage subset (tests/data/car_damage_mini: 48 + 24
photos); the whole set (Roboflow Universe "Bilgi University Car Damage" v1, CC BY 4.0, in the
GitHub repository Batikanyilmaz1/CarDamageDetection: 1491 / 492 / 490 photos) is given by its
folder.

Each conversion runs in a fresh Python process, so that its peak resident memory is its own:
the process imports TensorFlow first (not timed; its resident size is printed as the
baseline), then converts. Wall-clock time, process CPU time (all threads) and the peak
resident set (`ru_maxrss`) are printed per split, reader-thread count and repeat; the table
keeps the median wall time of the repeats. Images per CPU-second do not depend on the other
processes of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package
ANNOTATIONS = "_annotations.coco.json"
SECTION = "## Conversion speed"


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def convert_once(split_dir: str, workers: int) -> dict:
    """One conversion in this process (the child's side); returns its measurements."""
    import tensorflow as tf  # noqa: F401  (imported before timing: the baseline memory)

    from tfmaskrcnn.data.convert import convert_coco

    baseline = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as output:
        wall, cpu = time.perf_counter(), time.process_time()
        report = convert_coco(
            str(pathlib.Path(split_dir) / ANNOTATIONS), split_dir, output, workers=workers, progress=False
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(p.stat().st_size for p in pathlib.Path(output).glob("*.tfrecord"))
    return {
        "images": report.num_images_out,
        "annotations": report.num_annotations_out,
        "skipped": report.num_skipped,
        "seconds": wall,
        "cpu_seconds": cpu,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _peak_rss_mib(),
        "records_mib": size / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(REPO / "tests" / "data" / "car_damage_mini"),
        help="a Roboflow COCO export folder with split folders (train/, valid/, test/); default: the repository's "
        "car-damage subset",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="reader-thread counts to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help=f"write the '{SECTION}' section of the docs")
    parser.add_argument("--one", nargs=2, metavar=("SPLIT_DIR", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(convert_once(args.one[0], int(args.one[1]))))
        return 0

    data = pathlib.Path(args.data)
    splits = [d for d in sorted(data.iterdir()) if (d / ANNOTATIONS).is_file()]
    if not splits:
        parser.error(f"{data}: no split folder with {ANNOTATIONS}")
    rows = []
    for split in splits:
        for workers in args.workers:
            runs = []
            for repeat in range(args.repeats):
                child = [sys.executable, str(pathlib.Path(__file__).resolve()), "--one", str(split), str(workers)]
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                run = json.loads(out.strip().splitlines()[-1])
                runs.append(run)
                print(
                    f"{split.name} workers={workers} #{repeat}: {run['images']} images, {run['annotations']} "
                    f"annotations in {run['seconds']:.2f} s ({run['images'] / run['seconds']:.1f} images/s, "
                    f"{run['annotations'] / run['seconds']:.1f} annotations/s, CPU {run['cpu_seconds']:.2f} s), "
                    f"peak RSS {run['peak_rss_mib']:.0f} MiB (after imports {run['baseline_rss_mib']:.0f})",
                    flush=True,
                )
            median = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu_seconds"] for r in runs)
            first = runs[0]
            rows.append(
                (
                    split.name,
                    workers,
                    first["images"],
                    first["annotations"],
                    first["images"] / median,
                    first["annotations"] / median,
                    first["images"] / cpu,
                    max(r["peak_rss_mib"] for r in runs),
                    max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs),
                    first["records_mib"],
                )
            )
    header = (
        "| split | reader threads | images | annotations | images/s | annotations/s | images per CPU-second "
        "| peak RSS (MiB) | of which conversion | records (MiB) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join(
        [header]
        + [
            f"| {s} | {w} | {i} | {a} | {ips:.1f} | {aps:.1f} | {cps:.1f} | {peak:.0f} | {own:.0f} | {size:.1f} |"
            for s, w, i, a, ips, aps, cps, peak, own, size in rows
        ]
    )
    print(table)
    if args.write_docs:
        from bench_docs import replace_section

        load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
        replace_section(
            SECTION,
            f"{SECTION}\n\n`python benchmarks/convert_speed.py "
            f"{'--data CAR_DAMAGE_DIR ' if args.data != parser.get_default('data') else ''}"  # no machine's path
            f"--workers {' '.join(map(str, args.workers))} --repeats {args.repeats}` (median of the repeats; "
            f"load average at the end {load}).\n\n{table}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
