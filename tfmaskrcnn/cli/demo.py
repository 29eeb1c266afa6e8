"""`tfmaskrcnn demo` (`make demo`): the whole story on shapes, in one folder and one HTML report.

    tfmaskrcnn demo --output demo_out [--seed 0] [--quick] [--verbose]

1. an imbalanced shapes dataset (the first class holds ~88% of the training instances; the
   validation split is balanced), converted to TFRecords and audited;
2. a baseline with Model Garden's stock settings, then the cure (inverse class weights capped at
   10x + repeat-factor sampling, docs/class_balance.md) at the same step budget;
   the cure's post-hoc step, `tfmaskrcnn calibrate --select balance --thresholds f1`, fitted on a
   held-out split (`calib`: drawn beside train and val with val's class mix), not on val;
3. per-class evaluation of both (box and mask AP, confusion matrix, collapse alarm), side by side,
   the cure at the operating point it ships (its per-class thresholds);
4. the doctor on the baseline;
5. the cure exported as a SavedModel, which then predicts on a few validation images.

Everything goes under --output; OUT/report.html tells the story, OUT/per_class_mask_ap.png is
its per-class chart and OUT/summary.json the numbers. `--quick` runs every stage at the
smallest settings (a few images and steps: it shows that everything runs, not a cure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tfmaskrcnn import io
from tfmaskrcnn.cli import console, demo_stages

CLASS_SHARES = (0.88, 0.08, 0.04)  # training shares: square, circle, triangle
FULL = {
    "num_train": 400,
    "num_val": 100,
    "num_calib": 32,
    "steps": demo_stages.FULL_STEPS,
    "doctor_images": 50,
    "predict_images": 6,
    "verify_export": True,
}
QUICK = {
    "num_train": 32,
    "num_val": 9,
    "num_calib": 9,
    "steps": 6,
    "doctor_images": 9,
    "predict_images": 2,
    "verify_export": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo_out", help="folder for everything the demo writes (default demo_out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the input order")
    parser.add_argument(
        "--quick", action="store_true", help="smallest settings: every stage runs in a few minutes, no cure shown"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps of each run (default {FULL['steps']}, with --quick {QUICK['steps']})",
    )
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's and Model Garden's own logs")


class _Stages:
    """Runs named stages, prints a header for each and records its wall time."""

    def __init__(self, total: int):
        self.total, self.number, self.timings = total, 0, {}

    def __call__(self, name: str, fn, *args, **kwargs):
        self.number += 1
        print(f"\n[{self.number}/{self.total}] {name}", flush=True)
        start = time.monotonic()
        result = fn(*args, **kwargs)
        self.timings[name] = time.monotonic() - start
        return result


def main(args: argparse.Namespace) -> int:
    restore_logs = console.quiet_tensorflow_logs(args.verbose)
    try:
        return _main(args)
    finally:
        restore_logs()


def _main(args: argparse.Namespace) -> int:
    start = time.monotonic()
    settings = dict(QUICK if args.quick else FULL)
    if args.steps:
        settings["steps"] = args.steps
    out = args.output
    os.makedirs(out, exist_ok=True)
    stage = _Stages(total=11)
    ctx = demo_stages.Context(output=out, seed=args.seed, steps=settings["steps"], verbose=args.verbose, progress=True)
    native_log = None if args.verbose else os.path.join(out, "logs", "tensorflow.log")
    try:
        with console.native_stderr_to(native_log):
            summary = _run(stage, ctx, settings, _command(args))
    except demo_stages.DemoError as error:
        print(f"tfmaskrcnn demo: error: {error}", file=sys.stderr)
        return 1
    except BaseException:
        if native_log:  # a crash may have left its native side there
            print(f"tfmaskrcnn demo: TensorFlow's own log lines are in {native_log}", file=sys.stderr)
        raise
    wall = time.monotonic() - start
    io.write_atomic(os.path.join(out, "summary.json"), json.dumps(dict(summary, wall_seconds=round(wall, 1)), indent=1))
    print(demo_stages.format_summary(summary))
    print(f"\nwall time {wall:.0f} s" + (f"; TensorFlow's own log lines: {native_log}" if native_log else ""))
    print(f"report: {os.path.join(out, 'report.html')}")
    print(f"output folder: {os.path.abspath(out)}")
    return 0


def _run(stage: _Stages, ctx: demo_stages.Context, settings: dict, command: str) -> dict:
    """Every stage in order; returns the summary of the report stage."""
    data = stage("imbalanced shapes dataset", demo_stages.make_dataset, ctx, CLASS_SHARES, settings)
    records = stage("conversion to TFRecords", demo_stages.convert, ctx, data)
    audit = stage("dataset audit", demo_stages.audit, ctx, records)
    runs = {}
    for run in ("baseline", "cure"):
        label = demo_stages.RUN_SETTINGS[run]["label"]
        runs[run] = stage(f"training: {run} ({label})", demo_stages.train, ctx, run, records)
    calibration = stage(
        f"the cure's operating point, fitted on the held-out {demo_stages.CALIB_SPLIT} split",
        demo_stages.calibrate_cure,
        ctx,
        runs["cure"],
        records,
    )
    evaluation = stage("per-class evaluation of both runs", demo_stages.evaluate_runs, ctx, runs, records)
    doctor = stage("the doctor on the baseline", demo_stages.doctor, ctx, runs["baseline"], records, settings)
    export = stage("export of the cure", demo_stages.export, ctx, runs["cure"], settings["verify_export"])
    count = settings["predict_images"]
    predictions = stage("predictions of the SavedModel", demo_stages.predict, ctx, export, data, count)
    return stage(
        "report",
        demo_stages.write_report,
        ctx,
        data=data,
        audit=audit,
        runs=runs,
        calibration=calibration,
        evaluation=evaluation,
        doctor=doctor,
        export=export,
        predictions=predictions,
        timings=stage.timings,
        command=command,
    )


def _command(args: argparse.Namespace) -> str:
    parts = ["tfmaskrcnn demo", f"--output {args.output}", f"--seed {args.seed}"]
    if args.quick:
        parts.append("--quick")
    if args.steps:
        parts.append(f"--steps {args.steps}")
    return " ".join(parts)
