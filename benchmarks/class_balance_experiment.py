#!/usr/bin/env python
"""Per-class mask AP on imbalanced shapes: stock vs class weights vs sampling vs both (vs augmentation).

  python benchmarks/class_balance_experiment.py --output bench_out/balance --steps 500 --seeds 0 1 2

Makes the shapes dataset with --class-ratios 0.9,0.07,0.03 (balanced validation split),
converts it, then trains the tiny CPU recipe once per (setting, seed), each in a fresh
process with every seed fixed, and writes a table of per-class mask AP (mean and spread
over seeds) to OUTPUT/summary.md (the one in docs/class_balance.md came from this).
A run whose result file exists is not repeated, so the script can be resumed.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SETTINGS = {
    "stock": {},
    "weights": {"task": {"class_balance": {"weighting": {"scheme": "sqrt_inverse"}}}},
    "sampling": {"task": {"train_data": {"sampling": {"type": "repeat_factor"}}}},
    "both": {
        "task": {
            "class_balance": {"weighting": {"scheme": "sqrt_inverse"}},
            "train_data": {"sampling": {"type": "repeat_factor"}},
        }
    },
    "weights_inverse": {"task": {"class_balance": {"weighting": {"scheme": "inverse", "max_ratio": 10.0}}}},
    "augment_standard": {"task": {"train_data": {"parser": {"augmentation": {"preset": "standard"}}}}},
    "augment_light": {"task": {"train_data": {"parser": {"augmentation": {"preset": "light"}}}}},
}
RATIOS = (0.9, 0.07, 0.03)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_data(root: str) -> dict:
    from tfmaskrcnn.data import convert  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.data.shapes import generator as shapes  # pylint: disable=g-import-not-at-top

    records = {split: os.path.join(root, "records", split) for split in ("train", "val")}
    if not os.path.exists(os.path.join(records["val"], "label_map.json")):
        shapes.generate_shapes_dataset(
            os.path.join(root, "shapes"), num_train=400, num_val=100, class_ratios=RATIOS, seed=0
        )
        for split in ("train", "val"):
            convert.convert_coco(
                os.path.join(root, "shapes", "annotations", f"instances_{split}.json"),
                os.path.join(root, "shapes", split),
                records[split],
                num_shards=2,
            )
    return {split: os.path.join(path, "*.tfrecord") for split, path in records.items()}


def run_one(args) -> None:
    """One training run in this process; writes its per-class metrics as JSON."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    from tfmaskrcnn.cli import train  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.configs import maskrcnn as configs  # pylint: disable=g-import-not-at-top

    tf_keras.utils.set_random_seed(args.seed)
    tf.random.set_seed(args.seed)
    records = make_data(args.output)
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    steps = args.steps
    params.override(
        _merge(
            {
                "task": {
                    "train_data": {
                        "input_path": records["train"],
                        "seed": args.seed,
                        "sampling": {"seed": args.seed},
                        "parser": {"augmentation": {"seed": args.seed}},
                    },
                    "validation_data": {"input_path": records["val"]},
                },
                "trainer": {"checkpoint_interval": steps},
            },
            _merge(configs.shapes_budget_override(steps), SETTINGS[args.setting]),
        ),
        is_strict=True,
    )
    model_dir = os.path.join(args.output, "runs", f"{args.setting}_seed{args.seed}")
    _, logs = train.run(params, model_dir, "train", post_eval=True)
    result = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
    result["class_weights"] = params.task.class_balance.weighting.weights
    result["sampling_threshold"] = params.task.train_data.sampling.threshold
    with open(_result_path(args.output, args.setting, args.seed) + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(
        _result_path(args.output, args.setting, args.seed) + ".tmp", _result_path(args.output, args.setting, args.seed)
    )


def _result_path(output: str, setting: str, seed: int) -> str:
    return os.path.join(output, "results", f"{setting}_seed{seed}.json")


def summarize(output: str, settings, seeds, steps: int) -> str:
    classes = ("square", "circle", "triangle")
    lines = [
        f"Imbalanced shapes (train instance shares {RATIOS}, 400 images; balanced val, "
        f"100 images), `tfmaskrcnn_shapes_cpu`, {steps} steps, seeds {list(seeds)}.",
        "Mask AP per class, mean ± standard deviation over seeds (n per row).",
        "",
        "| setting | n | " + " | ".join(classes) + " | all (mask AP) | box AP |",
        "|---|---:|" + "---:|" * (len(classes) + 2),
    ]
    for setting in settings:
        results = []
        for seed in seeds:
            path = _result_path(output, setting, seed)
            if os.path.exists(path):
                with open(path) as f:
                    results.append(json.load(f))
        if not results:
            continue

        def cell(key):
            values = np.array([r.get(key, np.nan) for r in results])
            return f"{values.mean():.3f} ± {values.std():.3f}"

        lines.append(
            f"| {setting} | {len(results)} | "
            + " | ".join(cell(f"mask_AP/{c}") for c in classes)
            + f" | {cell('mask_AP')} | {cell('AP')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_out/balance")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setting:
        run_one(args)
        return 0
    os.makedirs(os.path.join(args.output, "results"), exist_ok=True)
    make_data(args.output)
    for seed in args.seeds:  # seed-major, so a partial run still covers every setting
        for setting in args.settings:
            if os.path.exists(_result_path(args.output, setting, seed)):
                continue
            print(f"== {setting} seed {seed}", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--output",
                    args.output,
                    "--steps",
                    str(args.steps),
                    "--setting",
                    setting,
                    "--seed",
                    str(seed),
                ],
                check=True,
            )
            print(summarize(args.output, args.settings, args.seeds, args.steps), flush=True)
    table = summarize(args.output, args.settings, args.seeds, args.steps)
    with open(os.path.join(args.output, "summary.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
