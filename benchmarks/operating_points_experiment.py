#!/usr/bin/env python
"""Per-class operating points on the 5-class shapes benchmark: one global threshold vs one per class.

  nice -n 10 python benchmarks/operating_points_experiment.py --steps 1000 --seeds 0 1 2 \\
      --settings stock both_norcal both_norcal_balance

For each setting and seed: the run of `class_balance_experiment.py` (trained in its own process
at the demo's budget, 1,000 steps; `both_norcal_balance` is the recipe without copy-paste:
sqrt-inverse weights + repeat-factor sampling + NorCal with γ chosen by the operating point on a
held-out balanced split, `both_norcal` the same with γ chosen by AP,
`both_copy_paste_norcal_balance` the recommended recipe, with copy-paste), then
`tfmaskrcnn calibrate --thresholds f1` at the run's γ on that same held-out split (the balanced
validation split of another data seed: never the split measured on), then, on the validation
split, per-class precision / recall / F1 and the collapse alarm twice from one set of
detections: every class at the global score threshold 0.5, and each class at its own
threshold. Goal (issue 26): every class's F1 at its threshold >= its F1 at the global one, and
the alarm OK on every seed for the recipe.

Per-run JSON goes to benchmarks/results/class_balance/operating_points_STEPS/ (kept in the
repository); a run whose JSON exists is not repeated, and a trained model dir under --output is
reused, so the command resumes where it stopped. The table goes to stdout and RESULTS/summary.md
(resumable.py).
"""

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import class_balance_experiment as balance  # noqa: E402
from resumable import load, result_path, run_all, write_json  # noqa: E402

GLOBAL_THRESHOLD = balance.CONFIDENT  # 0.5: the demo's and the benchmark's operating point
RULE = "f1"
MIX = "five"
# setting -> the class_balance_experiment setting whose model dir it measures.
SETTINGS = {
    "stock": "stock",
    "both_norcal": "both_norcal",
    "both_norcal_balance": "both_norcal_balance",
    "copy_paste_sampling_norcal_balance": "copy_paste_sampling_norcal_balance",
    "both_copy_paste_norcal_balance": "both_copy_paste_norcal_balance",
}


def _run_dir(output: str, steps: int, setting: str, seed: int) -> str:
    return os.path.join(output, f"{MIX}_{steps}", "runs", f"{setting}_seed{seed}")


def train(args, setting: str, seed: int) -> str:
    """The class_balance_experiment run (its own process), unless its model dir has a checkpoint."""
    model_dir = _run_dir(args.output, args.steps, SETTINGS[setting], seed)
    if not os.path.exists(os.path.join(model_dir, "checkpoint")) or (
        "norcal" in setting and not os.path.exists(os.path.join(model_dir, "calibration.json"))
    ):
        subprocess.run(
            [sys.executable, os.path.join(HERE, "class_balance_experiment.py"), "--output", args.output]
            + ["--results", os.path.join(args.results, "training"), "--mix", MIX, "--steps", str(args.steps)]
            + ["--setting", SETTINGS[setting], "--seed", str(seed)],
            check=True,
        )
    return model_dir


def measure(model_dir: str, gamma: float, calibration, val_records: str) -> dict:
    """Per-class P / R / F1 and the alarm on the validation split at both operating points."""
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map
    from tfmaskrcnn.evaluation import groundtruth
    from tfmaskrcnn.evaluation.evaluate import evaluate
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving import detector

    label_map = LabelMap.load(find_label_map(val_records))
    coco_gt = groundtruth.coco_from_tfrecords(val_records, label_map, include_mask=True, progress=False)
    gamma_only = norcal.Calibration(
        gamma=gamma, class_names=calibration.class_names, class_counts=calibration.class_counts,
        variant=calibration.variant,
    )  # fmt: skip
    model = detector.CheckpointDetector.from_model_dir(model_dir, calibration=gamma_only)
    detections = detector.detections_from_model(
        model_dir=model_dir, data=val_records, label_map=label_map, progress=False, detector=model
    )
    points = {}
    for point, thresholds in (
        ("global", None),
        ("per_class", dict(enumerate(calibration.score_thresholds, start=1))),
    ):
        metrics = evaluate(
            coco_gt,
            detections,
            label_map=label_map,
            score_threshold=GLOBAL_THRESHOLD,
            progress=False,
            class_thresholds=thresholds,
        )
        rows = metrics["per_class"]
        gt_total = sum(r["gt_instances"] for r in rows.values()) or 1
        det_total = sum(r["predicted"] for r in rows.values())
        per_class = {
            name: {
                "threshold": r.get("score_threshold", GLOBAL_THRESHOLD),
                "precision": r["precision"],
                "recall": r["recall"],
                "f1": r["f1"],
                "predicted": r["predicted"],
                "gt_instances": r["gt_instances"],
                "mask_AP": r.get("mask_AP"),
                "share_ratio": (r["predicted"] / det_total) / (r["gt_instances"] / gt_total)
                if det_total and r["gt_instances"]
                else None,
            }
            for name, r in rows.items()
        }
        ratios = [v["share_ratio"] for v in per_class.values() if v["share_ratio"] is not None]
        points[point] = {
            "per_class": per_class,
            "alarm": metrics["alarm"]["verdict"],
            "alarm_reasons": metrics["alarm"]["reasons"],
            "confident_detections": det_total,
            "over": max(ratios) if ratios else None,
            "mask_AP": metrics["overall"].get("segm", {}).get("AP"),
        }
    return points


def run_one(args, setting: str, seed: int) -> dict:
    from tfmaskrcnn.cli.calibrate import calibrate
    from tfmaskrcnn.serving import calibration as norcal

    model_dir = train(args, setting, seed)
    records = balance.make_data(args.output, balance.MIXES[MIX])
    held_out = balance.make_data(args.output, (1.0,) * len(balance.MIXES[MIX]), seed=1)["val"]
    norcal_fit = norcal.find(model_dir)
    gamma = norcal_fit.gamma if norcal_fit is not None else 0.0
    fitted = calibrate(
        model_dir,
        held_out,
        gammas=[gamma],
        score_threshold=GLOBAL_THRESHOLD,
        output=os.path.join(model_dir, "calibration_thresholds.json"),
        progress=False,
        thresholds=RULE,
        evidence=args.evidence,
    )
    result = {
        "setting": setting,
        "seed": seed,
        "steps": args.steps,
        "gamma": gamma,
        "rule": RULE,
        "evidence": args.evidence,
        "held_out": held_out,
        "validation": records["val"],
        "score_thresholds": fitted.score_thresholds,
        "threshold_details": fitted.threshold_details,
    }
    result.update(measure(model_dir, gamma, fitted, records["val"]))
    return result


def _mean_f1(point: dict) -> float:
    """The classes' mean F1 at one operating point (a class never predicted counts 0)."""
    return float(np.mean([row["f1"] or 0.0 for row in point["per_class"].values()]))


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


def summarize(results: str, settings, seeds, steps: int) -> str:
    lines = [
        f"5-class shapes (training shares {balance.MIXES[MIX]}), `tfmaskrcnn_shapes_cpu`, {steps} steps; thresholds "
        f"fitted by `calibrate --thresholds {RULE}` on a held-out balanced split, measured on the validation split. "
        f"F1 per class at the global threshold {GLOBAL_THRESHOLD:g} → at per-class thresholds, per seed; alarm "
        "at each operating point; mean F1 over the classes (0 for a class never predicted); `over`: largest "
        "confident-detection share / ground-truth share.",
        "",
    ]
    for setting in settings:
        runs = load(results, setting, seeds)
        if not runs:
            lines += [f"{setting}: no run yet.", ""]
            continue
        names = list(runs[0]["global"]["per_class"])
        gammas = ", ".join(f"{r['gamma']:g}" for r in runs)
        evidence = ", ".join(sorted({f"{r.get('evidence', 0):g}" for r in runs}))
        lines += [
            f"**{setting}** (γ {gammas}; `--evidence` {evidence}):",
            "",
            "| seed | " + " | ".join(names) + " | F1 not lower | mean F1 | alarm (global → per-class) | over |",
            "|---|" + "---:|" * len(names) + "---:|---:|---|---|",
        ]
        for run in runs:
            cells, kept = [], 0
            for name in names:
                before, after = run["global"]["per_class"][name]["f1"], run["per_class"]["per_class"][name]["f1"]
                threshold = run["per_class"]["per_class"][name]["threshold"]
                cells.append(f"{_fmt(before)} → {_fmt(after)} (t {threshold:.2f})")
                kept += (after or 0.0) >= (before or 0.0) - 1e-9
            lines.append(
                f"| {run['seed']} | "
                + " | ".join(cells)
                + f" | {kept}/{len(names)} | {_fmt(_mean_f1(run['global']))} → {_fmt(_mean_f1(run['per_class']))}"
                + f" | {run['global']['alarm']} → {run['per_class']['alarm']}"
                + f" | {_fmt(run['global']['over'])} → {_fmt(run['per_class']['over'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_out/balance", help="data and model dirs (shared with class_balance)")
    parser.add_argument("--results", default=None, help="per-run JSON (default RESULTS/operating_points_STEPS)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default: the demo's 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--evidence", type=float, default=0.99, help="calibrate --evidence (default 0.99)")
    parser.add_argument("--summary", action="store_true", help="only print the table of the runs done")
    args = parser.parse_args()
    args.results = args.results or os.path.join(
        REPO, "benchmarks", "results", "class_balance", f"operating_points_{args.steps}"
    )

    def run(setting: str, seed: int) -> None:  # in this process: training, if any, is its own
        write_json(result_path(args.results, setting, seed), run_one(args, setting, seed))

    return run_all(
        args.results,
        [] if args.summary else [(setting, seed) for seed in args.seeds for setting in args.settings],  # seed-major
        run,
        lambda: summarize(args.results, args.settings, args.seeds, args.steps),
    )


if __name__ == "__main__":
    sys.exit(main())
