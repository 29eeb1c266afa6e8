#!/usr/bin/env python
"""Training images/s of `tfmaskrcnn_r50fpn_gpu` against stock Model Garden on the same card and data.

  python benchmarks/gpu_throughput.py --records 'bench_out/gpu/records/train/*.tfrecord' --steps 50

Each variant runs in a fresh process (a precision policy is global to a process): ours and
Model Garden's `maskrcnn_resnetfpn_coco`, each in float32, float16 (with loss scaling) and
float16 + XLA (`jit_compile` on the train step, as Model Garden's trainer does with
`runtime.enable_xla` on GPUs). Both read the same TFRecords with the same global batch
(per-GPU batch × GPUs) and input size; the first `--warmup` steps (tracing, autotuning)
are not timed. Prints one line per variant and a table with the ratio of ours to stock.
`benchmarks/gpu_throughput.sh` is the one command for a GPU machine; on a CPU the same
script runs with a shrunk model (`--input-size 128 --model-id 18 --tiny`), which is how the
test suite exercises it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    # name: (experiment, precision, xla)
    "ours_fp32": ("tfmaskrcnn_r50fpn_gpu", "float32", False),
    "ours_fp16": ("tfmaskrcnn_r50fpn_gpu", "float16", False),
    "ours_fp16_xla": ("tfmaskrcnn_r50fpn_gpu", "float16", True),
    "stock_fp32": ("maskrcnn_resnetfpn_coco", "float32", False),
    "stock_fp16": ("maskrcnn_resnetfpn_coco", "float16", False),
    "stock_fp16_xla": ("maskrcnn_resnetfpn_coco", "float16", True),
}

# Heads and proposal counts small enough for one CPU step in seconds (--tiny).
TINY_HEADS = {
    "decoder": {"fpn": {"num_filters": 32}},
    "rpn_head": {"num_filters": 32},
    "detection_head": {"num_convs": 0, "num_fcs": 1, "fc_dims": 64},
    "mask_head": {"num_convs": 1, "num_filters": 32},
    "roi_generator": {"num_proposals": 64, "pre_nms_top_k": 256, "test_num_proposals": 64, "test_pre_nms_top_k": 256},
    "roi_sampler": {"num_sampled_rois": 32},
    "mask_sampler": {"num_sampled_masks": 8},
}


def _params(experiment: str, precision: str, args, num_replicas: int):
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config(experiment)
    batch = args.batch_per_gpu * max(1, num_replicas)
    data = {"input_path": args.records, "global_batch_size": batch, "dtype": precision}
    model = {"input_size": [args.input_size, args.input_size, 3], "backbone": {"resnet": {"model_id": args.model_id}}}
    task = {"model": model, "train_data": data, "init_checkpoint": None}
    if experiment.startswith("tfmaskrcnn_"):
        task["validation_data"] = {"input_path": args.records}
    else:
        # Stock Model Garden: 91 COCO ids; the records' contiguous ids 1..K fit below that.
        model["num_classes"] = 91
        data["parser"] = {"aug_scale_min": 0.8, "aug_scale_max": 1.25}
    if args.tiny:  # CPU smoke runs: the same shrinking for ours and stock
        model.update(TINY_HEADS)
    params.override({"runtime": {"mixed_precision_dtype": precision}, "task": task}, is_strict=True)
    return params


def run_variant(name: str, args) -> dict:
    """Builds one variant in this process and times its train step; returns the measurement."""
    import tensorflow as tf
    from official.core import task_factory
    from official.modeling import performance

    experiment, precision, xla = VARIANTS[name]
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    params = _params(experiment, precision, args, len(gpus))
    performance.set_mixed_precision_policy(precision)
    with strategy.scope():
        task = task_factory.get_task(params.task)
        model = task.build_model()
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        metrics = task.build_metrics(training=True)
    dataset = strategy.distribute_datasets_from_function(lambda ctx: task.build_inputs(params.task.train_data, ctx))
    iterator = iter(dataset)
    step_fn = tf.function(task.train_step, jit_compile=xla)

    @tf.function
    def train_step(inputs):
        logs = strategy.run(
            step_fn, args=(inputs,), kwargs={"model": model, "optimizer": optimizer, "metrics": metrics}
        )
        return strategy.reduce(tf.distribute.ReduceOp.SUM, logs[task.loss], axis=None)

    for _ in range(args.warmup):
        loss = train_step(next(iterator))
    float(loss)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(next(iterator))
    float(loss)  # waits for the last step
    seconds = time.perf_counter() - start
    batch = params.task.train_data.global_batch_size
    return {
        "variant": name,
        "experiment": experiment,
        "precision": precision,
        "xla": xla,
        "gpus": len(gpus),
        "device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU",
        "global_batch": batch,
        "input_size": args.input_size,
        "steps": args.steps,
        "images_per_second": batch * args.steps / seconds,
        "loss": float(loss),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="training TFRecords glob (from `tfmaskrcnn convert`)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-per-gpu", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--model-id", type=int, default=50, help="ResNet depth (18 for a CPU smoke run)")
    parser.add_argument("--tiny", action="store_true", help="small heads and proposal counts (CPU smoke run)")
    parser.add_argument("--output", help="write the measurements as JSON here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one variant in this process
    args = parser.parse_args(argv)
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, args)), flush=True)
        return 0
    results = []
    for name in args.variants:
        command = [sys.executable, os.path.abspath(__file__), "--variant", name, "--records", args.records]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        command += ["--batch-per-gpu", str(args.batch_per_gpu), "--input-size", str(args.input_size)]
        command += ["--model-id", str(args.model_id)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{name}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
            results.append({"variant": name, "error": done.stderr[-500:]})
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        results.append(result)
        print(
            f"{name}: {result['images_per_second']:.2f} images/s on {result['gpus']} x {result['device']}", flush=True
        )
    by_name = {r["variant"]: r for r in results if "images_per_second" in r}
    print("\n| variant | images/s | ours / stock |\n|---|---:|---:|")
    for name, result in by_name.items():
        other = by_name.get(name.replace("ours_", "stock_")) if name.startswith("ours_") else None
        ratio = f"{result['images_per_second'] / other['images_per_second']:.2f}" if other else ""
        print(f"| {name} | {result['images_per_second']:.2f} | {ratio} |")
    if args.output:
        from tfmaskrcnn.io import write_atomic

        write_atomic(args.output, json.dumps(results, indent=1) + "\n")
    return 0 if len(by_name) == len(args.variants) else 1


if __name__ == "__main__":
    sys.exit(main())
