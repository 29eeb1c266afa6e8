"""Peak memory and speed of the training input pipeline with each image sampler.

    .venv/bin/python benchmarks/sampler_memory.py                       # COCO subset, 1024 px
    .venv/bin/python benchmarks/sampler_memory.py --data 'DIR/*.tfrecord' --json-output out.json

Variants, each measured in a fresh process (peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss`,
which only grows, so one pipeline per process):
* `stock`:         Model Garden's `InputReader`: read -> shuffle -> decode -> parse -> batch;
* `rf_decoded`:    repeat-factor sampling as `sample_fn` on decoded dicts (the code before
                   issue 11: its shuffle buffer holds decoded images and full-size masks);
* `rf_records`:    repeat-factor sampling on serialized records (`SamplingInputReader`, what
                   training uses now): labels parsed, records shuffled, decoded once;
* `ca_decoded`:    class-aware sampling on decoded dicts (before: one decoding stream per class);
* `ca_records`:    class-aware sampling on serialized records (now).
Parsing is Model Garden's Mask R-CNN train parser at `--output-size` (hflip, scale jitter,
mask crops 112), float32, batch `--batch-size`. The reader's own shuffle buffer is
`--shuffle-buffer` serialized records in every variant. Without `--data` the COCO subset
(tests/data/coco_tiny, or the folder TFMASKRCNN_COCO_TINY names) is converted once into bench_out/.
Prints a table (RSS, ratio to stock, images/s) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

VARIANTS = ("stock", "rf_decoded", "rf_records", "ca_decoded", "ca_records")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def coco_records(out_dir: str) -> str:
    from tfmaskrcnn.data.convert import convert_coco

    coco = os.environ.get("TFMASKRCNN_COCO_TINY", os.path.join(REPO, "tests", "data", "coco_tiny"))
    target = os.path.join(out_dir, "coco_tiny_train")
    pattern = os.path.join(target, "*.tfrecord*")
    import glob

    if not glob.glob(pattern):
        convert_coco(
            os.path.join(coco, "annotations", "instances_train2017.json"),
            os.path.join(coco, "train2017"),
            target,
            progress=False,
        )
    return pattern


def image_classes(files):
    import tensorflow as tf

    from tfmaskrcnn.dataloaders import sampling

    labels = tf.data.TFRecordDataset(files).map(sampling.record_classes)
    return [tuple(sorted(set(c.tolist()))) for c in labels.as_numpy_iterator()]


def build_dataset(variant: str, files, args):
    import numpy as np
    from official.core import config_definitions, input_reader
    from official.vision.dataloaders import maskrcnn_input, tf_example_decoder

    from tfmaskrcnn.dataloaders import input_reader as reader_lib
    from tfmaskrcnn.dataloaders import sampling

    classes = image_classes(files)
    num_classes = max(max(c, default=0) for c in classes)
    frequency = sampling.class_image_frequency(classes, num_classes)
    class_repeat = sampling.repeat_factors(frequency, sampling.choose_threshold(frequency))
    present = [int(c) + 1 for c in np.flatnonzero(frequency > 0)]
    on = "records" if variant.endswith("records") else "decoded"
    sampler = None
    if variant.startswith("rf"):
        sampler = sampling.make_repeat_factor_sample_fn(class_repeat, seed=1, shuffle_buffer=args.sampler_buffer, on=on)
    elif variant.startswith("ca"):
        sampler = sampling.make_class_aware_sample_fn(num_classes, seed=1, class_ids=present, on=on)
    params = config_definitions.DataConfig(
        input_path=",".join(files),
        is_training=True,
        global_batch_size=args.batch_size,
        shuffle_buffer_size=args.shuffle_buffer,
        seed=1,
    )
    parser = maskrcnn_input.Parser(
        output_size=[args.output_size, args.output_size],
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
    common = dict(
        decoder_fn=tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False).decode,
        parser_fn=parser.parse_fn(is_training=True),
    )
    if on == "records":
        reader = reader_lib.SamplingInputReader(params, record_sampler=lambda shard: sampler, **common)
    else:
        reader = input_reader.InputReader(params, sample_fn=sampler, **common)
    return reader.read(), {"num_classes": num_classes, "class_repeat_max": float(np.max(class_repeat))}


def child(variant: str, files, args) -> dict:
    dataset, info = build_dataset(variant, files, args)
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(args.warmup):
        next(iterator)
    warm = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    end = time.perf_counter()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return dict(
        variant=variant,
        peak_rss_mib=rss_mib,
        images_per_second=args.batches * args.batch_size / (end - warm),
        warmup_seconds=warm - start,
        **info,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="TFRecord glob; default: the COCO subset, converted")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "bench_out"))
    parser.add_argument("--output-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--shuffle-buffer", type=int, default=1000, help="the reader's shuffle (serialized records)")
    parser.add_argument("--sampler-buffer", type=int, default=64, help="repeat-factor shuffle (sampling default)")
    parser.add_argument("--warmup", type=int, default=5, help="batches before timing")
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-output", default=None)
    args = parser.parse_args(argv)

    import glob

    pattern = args.data or coco_records(args.out_dir)
    files = sorted(glob.glob(pattern))
    if not files:
        print(f"error: no files match {pattern!r}", file=sys.stderr)
        return 2
    if args.child:
        print("RESULT " + json.dumps(child(args.child, files, args)), flush=True)
        return 0

    results = {}
    for variant in args.variants.split(","):
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--data", pattern]
        for flag in ("output_size", "batch_size", "shuffle_buffer", "sampler_buffer", "warmup", "batches"):
            command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results[variant] = json.loads(lines[-1][len("RESULT ") :])
        r = results[variant]
        print(
            f"{variant:>11}: peak RSS {r['peak_rss_mib']:7.0f} MiB, {r['images_per_second']:5.2f} images/s", flush=True
        )

    stock = results.get("stock", {}).get("peak_rss_mib")
    print("\n| variant | peak RSS (MiB) | x stock | images/s |\n|---|---|---|---|")
    for variant, r in results.items():
        ratio = f"{r['peak_rss_mib'] / stock:.2f}x" if stock else "-"
        print(f"| {variant} | {r['peak_rss_mib']:.0f} | {ratio} | {r['images_per_second']:.2f} |")
    if args.json_output:
        import tensorflow as tf

        report = dict(
            results=results,
            files=files,
            args={k: v for k, v in vars(args).items() if k != "child"},
            cpus=os.cpu_count(),
            load_average=os.getloadavg(),
            machine=platform.machine(),
            tensorflow=tf.__version__,
        )
        with open(args.json_output + ".tmp", "w") as f:
            json.dump(report, f, indent=2)
        os.replace(args.json_output + ".tmp", args.json_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
