"""Training input pipeline throughput: stock Model Garden parsing vs our augmentation.

    python benchmarks/input_pipeline.py --data 'data/train/*.tfrecord' --output-size 640

Runs the same TFRecords through decode -> Mask R-CNN train parsing -> batch, for:
* `stock`:    Model Garden's `maskrcnn_input.Parser` (hflip + scale jitter 0.8-1.25);
* `none`:     `AugmentingParser` without an augmenter: the stock parser with our
              faster horizontal flip in front (the same flip, drawn the same way);
* `standard`: `AugmentingParser` with the in-graph `standard` preset in front of it;
* `imgaug`:   the same parser with `ImgaugAugmenter(standard_pipeline())`, an imgaug
              pipeline close to `standard` (only if imgaug imports; it needs numpy<2);
* `albumentations`: the same parser with `AlbumentationsAugmenter(standard_pipeline())`,
              the same pipeline in Albumentations (only if albumentations imports);
* `albumentations_typical`: the same parser with the pipeline most often pasted
              (`albumentations_adapter.typical_pipeline()`: flips, rot90, shift-scale-rotate, colour, blur).
The variants are timed in turns for `--rounds` rounds, so load from other processes
falls on all of them alike; in each round a variant's pipeline is built, warmed up
(`--warmup` batches: tracing, buffers) and timed alone. Reported: the median images/s
over rounds and the median over rounds of each round's ratio to stock and to none.
Prints a table and writes JSON.
Make TFRecords with `tfmaskrcnn convert --annotations ... --images ... --output DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def build_parser(augmenter, output_size: int, stock: bool = False):
    from official.vision.dataloaders import maskrcnn_input

    from tfmaskrcnn.dataloaders.parser import AugmentingParser

    # Model Garden's COCO Mask R-CNN defaults (maskrcnn_resnetfpn_coco).
    args = dict(
        output_size=[output_size, output_size],
        min_level=2,
        max_level=6,
        num_scales=1,
        aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=8.0,
        aug_rand_hflip=True,
        aug_scale_min=0.8,
        aug_scale_max=1.25,
        include_mask=True,
        mask_crop_size=112,
        max_num_instances=100,
        dtype="float32",
    )
    if stock:
        return maskrcnn_input.Parser(**args)
    return AugmentingParser(augmenter=augmenter, **args)


def make_iterator(files, parser, batch_size: int, threads):
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    autotune = tf.data.AUTOTUNE if threads is None else threads
    ds = (
        tf.data.TFRecordDataset(files)
        .repeat()
        .map(decoder.decode, num_parallel_calls=autotune)
        .map(parser.parse_fn(is_training=True), num_parallel_calls=autotune)
        .batch(batch_size, drop_remainder=True)
        .prefetch(2)
    )
    return iter(ds)


def time_batches(iterator, batches: int, batch_size: int) -> float:
    """Images per second over `batches` batches."""
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="TFRecord glob (Model Garden TfExample layout with masks)")
    parser.add_argument("--output-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3, help="batches excluded from timing per variant")
    parser.add_argument("--batches", type=int, default=15, help="timed batches per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds, variants interleaved")
    parser.add_argument("--threads", type=int, default=None, help="map parallelism (default: AUTOTUNE)")
    parser.add_argument("--variants", default="stock,none,standard,imgaug,albumentations,albumentations_typical")
    parser.add_argument("--json-output", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfmaskrcnn.augment import albumentations_adapter, imgaug_adapter
    from tfmaskrcnn.augment import presets as augment_presets

    files = sorted(tf.io.gfile.glob(args.data))
    if not files:
        print(f"error: no files match --data {args.data!r}; make them with `tfmaskrcnn convert`", file=sys.stderr)
        return 2
    augmenters = {
        "stock": lambda: None,
        "none": lambda: None,
        "standard": lambda: augment_presets.build_augmenter(
            augment_presets.AugmentationConfig(preset="standard"), unit_float_image=True
        ),  # as the task builds it
        "imgaug": lambda: imgaug_adapter.ImgaugAugmenter(imgaug_adapter.standard_pipeline()),
        "albumentations": lambda: albumentations_adapter.AlbumentationsAugmenter(
            albumentations_adapter.standard_pipeline()
        ),
        "albumentations_typical": lambda: albumentations_adapter.AlbumentationsAugmenter(
            albumentations_adapter.typical_pipeline()
        ),
    }
    parsers = {}
    for name in args.variants.split(","):
        try:
            parsers[name] = build_parser(augmenters[name](), args.output_size, stock=name == "stock")
        except ImportError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
    rounds = {name: [] for name in parsers}
    load_before = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, parser in parsers.items():
            # One pipeline alive at a time: an idle pipeline would keep filling its
            # buffers and steal CPU from the one being timed.
            iterator = make_iterator(files, parser, args.batch_size, args.threads)
            for _ in range(args.warmup):
                next(iterator)
            rounds[name].append(time_batches(iterator, args.batches, args.batch_size))
            del iterator
            print(f"round {r + 1} {name:>22}: {rounds[name][-1]:7.2f} images/s", flush=True)
    load = (load_before, os.getloadavg()[0])
    print(f"1-minute load average: {load[0]:.1f} before, {load[1]:.1f} after ({os.cpu_count()} CPUs)")
    results = {name: statistics.median(rates) for name, rates in rounds.items()}

    def paired_ratios(reference):
        # Ratio to the reference within each round, then the median: load that changes
        # between rounds moves both numbers of a round together and cancels in the ratio.
        if reference not in rounds:
            return {}
        return {
            name: statistics.median(r / s for r, s in zip(rates, rounds[reference])) for name, rates in rounds.items()
        }

    to_stock, to_none = paired_ratios("stock"), paired_ratios("none")
    fmt = lambda ratios, name: f"{ratios[name]:.2f}x" if ratios else "-"  # noqa: E731
    print("\n| variant | images/s (median) | median per-round ratio to stock | ... to none |\n|---|---|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.2f} | {fmt(to_stock, name)} | {fmt(to_none, name)} |")
    if args.json_output:
        report = {
            "images_per_second": results,
            "ratio_to_stock": to_stock,
            "ratio_to_none": to_none,
            "rounds": rounds,
            "files": files,
            "output_size": args.output_size,
            "batch_size": args.batch_size,
            "warmup_batches": args.warmup,
            "timed_batches": args.batches,
            "num_rounds": args.rounds,
            "threads": args.threads or "autotune",
            "cpus": os.cpu_count(),
            "load_average": load,
            "machine": platform.machine(),
            "tensorflow": tf.__version__,
        }
        temporary = args.json_output + ".tmp"
        with open(temporary, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(temporary, args.json_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
