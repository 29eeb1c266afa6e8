#!/usr/bin/env python
"""Per-class mask AP on imbalanced shapes, against a model trained on balanced data of the same size.

  python benchmarks/class_balance_experiment.py --mix five --steps 800 --seeds 0 1 2 \
      --settings reference stock both sampling

Makes the shapes dataset with the mix's training class shares (the validation split is
balanced and the same images for every mix), converts it, then trains the tiny CPU recipe
once per (setting, seed), each in a fresh process with every seed fixed. The `reference`
setting trains stock settings on a *balanced* training set of the same size from the same
generator: the goal is every minority class at >= 0.85x the reference's mask AP.

Every run is judged at the operating point too, not only by AP: after training, the model
runs on the validation split and, per class, the share of confident detections (score >=
0.5) is set against the class's share of the ground truth (`over` is the largest ratio of
the two over the classes: 1 is fair, 2 means a class gets twice the detections it should),
and the collapse alarm gives its verdict.

Per-run results are small JSON files kept in the repository (benchmarks/results/...) so the
table can be extended over several sessions; model dirs and data go under --output. A run
whose result file exists is not repeated. The table goes to stdout and RESULTS/summary.md
(resumable.py, shared with the other long benchmarks).
"""

import argparse
import os
import shutil
import sys

import numpy as np

# The settings table (SETTINGS, STAGED, MIXES, ...) lives beside this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from class_balance_settings import (  # noqa: E402  pylint: disable=wrong-import-position
    CALIBRATION_STAGES,
    MIXES,
    NORCAL_COUNTS,
    SETTINGS,
    STAGED,
)
from class_balance_settings import merge as _merge  # noqa: E402  pylint: disable=wrong-import-position
from resumable import load as _load  # noqa: E402  pylint: disable=wrong-import-position
from resumable import result_path as _result_path  # noqa: E402  pylint: disable=wrong-import-position
from resumable import run_all, spawn, write_json  # noqa: E402  pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIDENT = 0.5  # the operating point: detections a user would keep

NUM_TRAIN, NUM_VAL = 400, 100


def _shares_for(mix: str, setting: str) -> tuple:
    shares = MIXES[mix]
    return tuple([1.0] * len(shares)) if setting == "reference" else shares


def make_data(root: str, shares: tuple, seed: int = 0) -> dict:
    """Shapes data with these training shares under root/<shares>/; the val split is balanced.

    Another seed draws other images (seed 1's balanced val split calibrates NorCal)."""
    from tfmaskrcnn.data.shapes.records import write_shapes_records  # pylint: disable=g-import-not-at-top

    name = "data_" + "_".join(f"{s:g}" for s in shares) + (f"_seed{seed}" if seed else "")
    return write_shapes_records(
        os.path.join(root, name), num_shards=2, num_train=NUM_TRAIN, num_val=NUM_VAL, class_ratios=shares, seed=seed
    )


def operating_point(model_dir: str, val_records: str) -> dict:
    """Per-class detection share at score >= CONFIDENT vs ground-truth share, and the alarm."""
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.evaluation import groundtruth  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.evaluation.evaluate import evaluate  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.serving import detector  # pylint: disable=g-import-not-at-top

    label_map = LabelMap.load(find_label_map(val_records))
    coco_gt = groundtruth.coco_from_tfrecords(val_records, label_map, progress=False)
    detections = detector.detections_from_model(
        model_dir=model_dir, data=val_records, label_map=label_map, progress=False
    )
    metrics = evaluate(coco_gt, detections, label_map=label_map, score_threshold=CONFIDENT, progress=False)
    rows = metrics["per_class"]
    gt_total = sum(r["gt_instances"] for r in rows.values()) or 1
    det_total = sum(r["predicted"] for r in rows.values())
    result = {"alarm": metrics["alarm"]["verdict"], "confident_detections": det_total}
    for name, row in rows.items():
        gt_share = row["gt_instances"] / gt_total
        det_share = row["predicted"] / det_total if det_total else 0.0
        result[f"eval_mask_AP/{name}"] = row.get("mask_AP")
        result[f"det_share/{name}"] = det_share
        result[f"gt_share/{name}"] = gt_share
        result[f"recall/{name}"] = row.get("recall")
        result[f"precision/{name}"] = row.get("precision")
    ratios = [result[f"det_share/{n}"] / result[f"gt_share/{n}"] for n in rows if result[f"gt_share/{n}"] > 0]
    result["over"] = max(ratios) if ratios else float("nan")
    result["eval_mask_AP"] = metrics["overall"].get("segm", {}).get("AP")
    result["eval_box_AP"] = metrics["overall"].get("bbox", {}).get("AP")
    return result


def _model_dir(args, setting: str) -> str:
    return os.path.join(args.output, f"{args.mix}_{args.steps}", "runs", f"{setting}_seed{args.seed}")


def experiment_params(args, setting: str, records: dict):
    """The experiment config that trains `setting` (for a STAGED crt one, its second stage; a calibration
    stage trains nothing and has its base's), before resolution. Reads no data."""
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    import tfmaskrcnn.registry_imports  # noqa: F401  pylint: disable=g-import-not-at-top
    from tfmaskrcnn.configs import maskrcnn as configs  # pylint: disable=g-import-not-at-top

    base, stage, _ = STAGED.get(setting, (None, None, None))
    if stage in CALIBRATION_STAGES:
        return experiment_params(args, base, records)
    data = {
        "task": {
            "train_data": {
                "input_path": records["train"],
                "seed": args.seed,
                "sampling": {"seed": args.seed},
                "parser": {"augmentation": {"seed": args.seed}, "copy_paste": {"seed": args.seed}},
            },
            "validation_data": {"input_path": records["val"]},
        }
    }
    if setting in STAGED:  # the crt experiment keeps its own 300-step schedule
        params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu_crt")
        base = STAGED[setting][0]
        extra = _merge(SETTINGS[base], {"task": {"classifier_retraining": {"init_checkpoint": _model_dir(args, base)}}})
    else:
        params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
        extra = _merge(
            {"trainer": {"checkpoint_interval": args.steps}},
            _merge(configs.shapes_budget_override(args.steps), SETTINGS[setting]),
        )
    params.override(_merge(data, extra), is_strict=True)
    return params


def _train(args, setting: str, records: dict) -> dict:
    """Trains `setting` (or, for a STAGED one, its second stage) into its model dir; returns the logs."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top

    from tfmaskrcnn.cli import train  # pylint: disable=g-import-not-at-top

    tf_keras.utils.set_random_seed(args.seed)
    tf.random.set_seed(args.seed)
    params = experiment_params(args, setting, records)
    model_dir = _model_dir(args, setting)
    # A run whose training finished but whose measurement did not (killed, or a failure after
    # training) is evaluated again instead of trained again.
    latest = tf.train.latest_checkpoint(model_dir) if _has_checkpoint(model_dir) else None
    finished = bool(latest) and latest.endswith(f"ckpt-{params.trainer.train_steps}")
    if finished:
        print(f"== {setting} seed {args.seed}: trained already ({latest}), evaluating it", flush=True)
    _, logs = train.run(params, model_dir, "eval" if finished else "train", post_eval=True)
    result = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
    result["class_weights"] = params.task.class_balance.weighting.weights
    result["sampling_threshold"] = params.task.train_data.sampling.threshold
    return result


def _has_checkpoint(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, "checkpoint"))


def run_one(args) -> None:
    """One run in this process (a STAGED one also trains its base if that is missing); writes JSON."""
    records = make_data(args.output, _shares_for(args.mix, args.setting))
    base, stage, select = STAGED.get(args.setting, (None, None, None))
    if stage and not _has_checkpoint(_model_dir(args, base)):
        print(f"== training the base run {base} seed {args.seed} first", flush=True)
        _train(args, base, records)
    if stage in CALIBRATION_STAGES:
        from tfmaskrcnn.cli.calibrate import calibrate  # pylint: disable=g-import-not-at-top

        model_dir = _model_dir(args, args.setting)
        if not _has_checkpoint(model_dir):  # a copy, so the base run stays uncalibrated
            shutil.copytree(_model_dir(args, base), model_dir, dirs_exist_ok=True)
        calibration_split = make_data(args.output, (1.0,) * len(MIXES[args.mix]), seed=1)["val"]
        counts = NORCAL_COUNTS.get(args.setting, "image")
        fitted = calibrate(
            model_dir,
            calibration_split,
            score_threshold=CONFIDENT,
            progress=False,
            select=select,
            counts=counts,
            method=stage,
        )
        result = {"gamma": fitted.gamma, "method": fitted.method, "select": select, "counted_by": fitted.counted_by}
        if fitted.method == "fracal":  # gamma holds FRACAL's lambda
            result["fractal_dimensions"] = fitted.fractal_dimensions
    else:
        result = _train(args, args.setting, records)
    point = operating_point(_model_dir(args, args.setting), records["val"])
    result.update(point)
    if stage in CALIBRATION_STAGES:  # Model Garden's post-training eval has no calibration: the calibrated numbers
        result.update({k[len("eval_") :]: v for k, v in point.items() if k.startswith("eval_mask_AP")})
        result["AP"] = point["eval_box_AP"]
    write_json(_result_path(args.results, args.setting, args.seed), result)


def _mean_sd(values) -> str:
    values = np.array([np.nan if v is None else v for v in values], float)
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}" if np.isfinite(values).any() else "-"


def _over(run: dict) -> float:
    """The run's largest detection / ground-truth share ratio; inf when nothing was confident (not fair)."""
    return run["over"] if run.get("confident_detections", 1) else float("inf")


def summarize(results: str, mix: str, settings, seeds, steps: int) -> str:
    from tfmaskrcnn.data.shapes.draw import SHAPE_NAMES  # pylint: disable=g-import-not-at-top

    shares = MIXES[mix]
    classes = SHAPE_NAMES[: len(shares)]
    header_classes = [f"{c} ({s:.0%})" for c, s in zip(classes, shares)]
    reference = _load(results, "reference", seeds)
    ref_mean = {c: np.mean([r[f"mask_AP/{c}"] for r in reference]) for c in classes} if reference else {}
    lines = [
        f"Shapes, training class shares {shares} ({NUM_TRAIN} images; `reference`: balanced, same size), "
        f"balanced validation ({NUM_VAL} images); `tfmaskrcnn_shapes_cpu`, {steps} steps; seeds {list(seeds)}.",
        "",
        "Mask AP per class, mean ± sd over seeds (n per row):",
        "",
        "| setting | n | " + " | ".join(header_classes) + " | mask AP | box AP |",
        "|---|---:|" + "---:|" * (len(classes) + 2),
    ]
    ratio_lines = [
        "",
        "Ratio of the mean per-class mask AP to the reference's (goal: >= 0.85 for every minority class):",
        "",
        "| setting | " + " | ".join(header_classes) + " | lowest minority ratio |",
        "|---|" + "---:|" * (len(classes) + 1),
    ]
    op_lines = [
        "",
        f"Operating point (score >= {CONFIDENT}) on the balanced validation split: per class, share of "
        "confident detections (the ground-truth share is about 1/K); `over`: largest detection / "
        "ground-truth share ratio per run (mean, max); `≤ ref`: seeds where `over` is at most the "
        "reference's of the same seed, and seeds where the alarm says ok wherever the reference's does; "
        "alarm verdicts:",
        "",
        "| setting | " + " | ".join(classes) + " | over (mean, max) | over ≤ ref | alarm ok where ref ok | alarm |",
        "|---|" + "---:|" * (len(classes) + 1) + "---:|---:|---|",
    ]
    ref_by_seed = {seed: run for seed in seeds for run in _load(results, "reference", [seed])}
    for setting in settings:
        by_seed = {seed: run for seed in seeds for run in _load(results, setting, [seed])}
        runs = list(by_seed.values())
        if not runs:
            continue
        lines.append(
            f"| {setting} | {len(runs)} | "
            + " | ".join(_mean_sd([r.get(f"mask_AP/{c}") for r in runs]) for c in classes)
            + f" | {_mean_sd([r.get('mask_AP') for r in runs])} | {_mean_sd([r.get('AP') for r in runs])} |"
        )
        if ref_mean:
            ratios = [np.mean([r[f"mask_AP/{c}"] for r in runs]) / max(ref_mean[c], 1e-9) for c in classes]
            ratio_lines.append(
                f"| {setting} | " + " | ".join(f"{x:.2f}" for x in ratios) + f" | {min(ratios[1:]):.2f} |"
            )
        if all("over" in r for r in runs):
            overs = [_over(r) for r in runs]
            alarms = ", ".join(r["alarm"] for r in runs)
            paired = [(seed, run) for seed, run in by_seed.items() if seed in ref_by_seed]
            fair = sum(_over(run) <= _over(ref_by_seed[seed]) + 1e-9 for seed, run in paired)
            alarm_kept = sum(run["alarm"] == "ok" or ref_by_seed[seed]["alarm"] != "ok" for seed, run in paired)
            op_lines.append(
                f"| {setting} | "
                + " | ".join(_mean_sd([r.get(f"det_share/{c}") for r in runs]) for c in classes)
                + f" | {np.mean(overs):.2f}, {np.max(overs):.2f} | {fair}/{len(paired)} | {alarm_kept}/{len(paired)}"
                + f" | {alarms} |"
            )
    return "\n".join(lines + (ratio_lines if ref_mean else []) + op_lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_out/balance", help="data and model dirs")
    parser.add_argument(
        "--results", default=None, help="per-run JSON (default benchmarks/results/class_balance/MIX_STEPS)"
    )
    parser.add_argument("--mix", choices=list(MIXES), default="five")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS) + list(STAGED), choices=list(SETTINGS) + list(STAGED)
    )
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.results = args.results or os.path.join(
        REPO, "benchmarks", "results", "class_balance", f"{args.mix}_{args.steps}"
    )
    if args.setting:
        run_one(args)
        return 0
    options = ["--output", args.output, "--results", args.results, "--mix", args.mix, "--steps", str(args.steps)]

    def run(setting: str, seed: int) -> None:
        spawn(__file__, options, setting, seed)

    return run_all(
        args.results,
        [(setting, seed) for seed in args.seeds for setting in args.settings],  # seed-major: a partial run covers all
        run,
        lambda: summarize(args.results, args.mix, args.settings, args.seeds, args.steps),
    )


if __name__ == "__main__":
    sys.exit(main())
