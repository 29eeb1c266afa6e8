"""Training input pipeline throughput with class-balanced copy-paste vs the stock parser, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/copy_paste_throughput.py --workdir bench_out/copy_paste \
        --json-output copy_paste.json

Converts (once, into --workdir) the COCO subset (tests/data/coco_tiny, or the folder
TFMASKRCNN_COCO_TINY names) and a synthetic shapes set, then on each dataset times decode ->
Mask R-CNN train parsing -> batch with the functions of `benchmarks/input_pipeline.py`:
* `stock`:      Model Garden's `maskrcnn_input.Parser` (hflip + scale jitter 0.8-1.25);
* `none`:       `AugmentingParser` without augmenter or copy-paste (our faster flip);
* `copy_paste`: `AugmentingParser` with the copy-paster the task builds for
                `copy_paste {enabled: true}` (defaults: up to 3 instances, repeat-factor
                class sampling, scale 0.5-1.5, blend sigma 1, bank of 2,000 64x64 crops).
Variants are timed in turns for --rounds rounds (one pipeline alive at a time), and the
median images/s, the median per-round ratio to stock and to none, and the process CPU time
per image (steadier than wall time on a loaded machine) are reported. The bank
is built once per dataset before timing; its build time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import input_pipeline  # noqa: E402  (benchmarks/input_pipeline.py: parser, iterator and timing)

REPO = pathlib.Path(__file__).resolve().parent.parent
COCO_TINY = pathlib.Path(os.environ.get("TFMASKRCNN_COCO_TINY", REPO / "tests" / "data" / "coco_tiny"))


def prepare_data(workdir: pathlib.Path, num_shapes: int) -> dict:
    """name -> (TFRecord glob, output size); converts what is not there yet."""
    from tfmaskrcnn.data import convert
    from tfmaskrcnn.data.shapes import generator as shapes

    data = {}
    shapes_out = workdir / "shapes_train"
    if not list(shapes_out.glob("*.tfrecord")):
        shapes.generate_shapes_dataset(workdir / "shapes", num_train=num_shapes, num_val=4, seed=0, progress=False)
        convert.convert_coco(
            str(workdir / "shapes" / "annotations" / "instances_train.json"),
            str(workdir / "shapes" / "train"),
            str(shapes_out),
            num_shards=1,
            progress=False,
        )
    data["shapes"] = (str(shapes_out / "*.tfrecord"), 128)
    coco_out = workdir / "coco_train"
    if (COCO_TINY / "annotations" / "instances_train2017.json").exists():
        if not list(coco_out.glob("*.tfrecord")):
            convert.convert_coco(
                str(COCO_TINY / "annotations" / "instances_train2017.json"),
                str(COCO_TINY / "train2017"),
                str(coco_out),
                num_shards=1,
                progress=False,
            )
        data["coco"] = (str(coco_out / "*.tfrecord"), 640)
    else:
        print(f"skipping COCO: {COCO_TINY} has no annotations/instances_train2017.json", file=sys.stderr)
    return data


def build_variants(files, output_size: int, copy_paste_overrides: dict):
    from tfmaskrcnn.configs.maskrcnn import CopyPasteConfig
    from tfmaskrcnn.dataloaders import copy_paste

    config = CopyPasteConfig({"enabled": True, "seed": 0, **copy_paste_overrides})
    start = time.perf_counter()
    paster = copy_paste.build_copy_paster(config, files, max_total_instances=100)
    bank_seconds = time.perf_counter() - start
    with_paste = input_pipeline.build_parser(None, output_size)
    with_paste._copy_paster = paster  # pylint: disable=protected-access  (the hook the task's constructor sets)
    variants = {
        "stock": input_pipeline.build_parser(None, output_size, stock=True),
        "none": input_pipeline.build_parser(None, output_size),
        "copy_paste": with_paste,
    }
    bank = {"seconds": bank_seconds, "instances": int(paster.bank.classes.shape[0])}
    return variants, bank


def run_dataset(name, pattern, output_size, args, overrides) -> dict:
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern))
    parsers, bank = build_variants(files, output_size, overrides)
    print(f"{name}: bank of {bank['instances']} instances built in {bank['seconds']:.1f} s", flush=True)
    batches = args.batches if output_size >= 512 else args.batches * 3
    rounds = {variant: [] for variant in parsers}
    cpu = {variant: [] for variant in parsers}  # process CPU time per image: steadier than wall time under load
    for r in range(args.rounds):
        for variant, parser in parsers.items():
            iterator = input_pipeline.make_iterator(files, parser, args.batch_size, args.threads)
            for _ in range(args.warmup):
                next(iterator)
            cpu_start = time.process_time()
            rounds[variant].append(input_pipeline.time_batches(iterator, batches, args.batch_size))
            cpu[variant].append(1000 * (time.process_time() - cpu_start) / (batches * args.batch_size))
            del iterator
            print(
                f"{name} round {r + 1} {variant:>10}: {rounds[variant][-1]:7.2f} images/s, "
                f"{cpu[variant][-1]:6.1f} CPU ms/image",
                flush=True,
            )

    def ratio(reference):
        return {v: statistics.median(a / b for a, b in zip(rates, rounds[reference])) for v, rates in rounds.items()}

    return {
        "images_per_second": {v: statistics.median(rates) for v, rates in rounds.items()},
        "ratio_to_stock": ratio("stock"),
        "ratio_to_none": ratio("none"),
        "rounds": rounds,
        "cpu_ms_per_image": {v: statistics.median(values) for v, values in cpu.items()},
        "cpu_ms_rounds": cpu,
        "bank": bank,
        "output_size": output_size,
        "timed_batches": batches,
        "files": files,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_out/copy_paste", help="converted data is kept here")
    parser.add_argument("--datasets", default="shapes,coco")
    parser.add_argument("--num-shapes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round at 640 px (x3 at 128 px)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="map parallelism (default: AUTOTUNE)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE", help="copy_paste field"
    )
    parser.add_argument("--json-output", default=None)
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = value if key == "class_sampling" else float(value) if "." in value else int(value)

    import tensorflow as tf

    data = prepare_data(pathlib.Path(args.workdir), args.num_shapes)
    load_before = os.getloadavg()[0]
    results = {}
    for name in args.datasets.split(","):
        if name in data:
            results[name] = run_dataset(name, *data[name], args, overrides)
    load = (load_before, os.getloadavg()[0])
    print(f"\n1-minute load average: {load[0]:.1f} before, {load[1]:.1f} after ({os.cpu_count()} CPUs)")
    print("| dataset | variant | images/s (median) | vs stock | vs none | CPU ms/image |\n|---|---|---|---|---|---|")
    for name, result in results.items():
        for variant, rate in result["images_per_second"].items():
            print(
                f"| {name} {result['output_size']} px | {variant} | {rate:.1f} | "
                f"{result['ratio_to_stock'][variant]:.2f}x | {result['ratio_to_none'][variant]:.2f}x | "
                f"{result['cpu_ms_per_image'][variant]:.1f} |"
            )
    if args.json_output:
        report = {
            "datasets": results,
            "copy_paste_overrides": overrides,
            "batch_size": args.batch_size,
            "num_rounds": args.rounds,
            "cpus": os.cpu_count(),
            "load_average": load,
            "tensorflow": tf.__version__,
        }
        with open(args.json_output + ".tmp", "w") as f:
            json.dump(report, f, indent=2)
        os.replace(args.json_output + ".tmp", args.json_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
