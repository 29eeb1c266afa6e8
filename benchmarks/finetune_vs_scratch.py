"""Fine-tuned vs from-scratch mask AP at equal steps on the 3 demo shapes (issue 12 item 2).

    python benchmarks/finetune_vs_scratch.py --pretrain_steps 800 --steps 300 --seeds 0 1 2

A `tfmaskrcnn_shapes_cpu` model is pretrained once on four other shapes (hexagon, cross,
ellipse, arrow; 5 outputs with background), then for each seed the 3-class demo model
(square, circle, triangle) is trained for --steps twice, in a fresh process each with every seed
fixed: from scratch, and initialized from the pretrained checkpoint (`task.init_checkpoint`,
`init_checkpoint_modules: all`: every layer restored except the class-dependent ones, which are
re-initialized). Each run writes its metrics as JSON under --results; summary.md has the table
(mean ± sd over seeds, per class).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resumable import load, result_path, run_all, spawn, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_CLASSES = ("hexagon", "cross", "ellipse", "arrow")
DEMO_CLASSES = ("square", "circle", "triangle")
SETTINGS = ("scratch", "finetuned")


def make_data(root: str, name: str, classes, num_train: int, num_val: int) -> dict:
    from tfmaskrcnn.data.shapes.records import write_shapes_records  # pylint: disable=g-import-not-at-top

    return write_shapes_records(
        os.path.join(root, f"data_{name}_{num_train}"),
        num_train=num_train,
        num_val=num_val,
        seed=0 if name == "demo" else 100,
        classes=classes,
    )


def _params(records: dict, steps: int, seed: int):
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    import tfmaskrcnn.registry_imports  # noqa: F401  pylint: disable=g-import-not-at-top
    from tfmaskrcnn.configs import maskrcnn as configs  # pylint: disable=g-import-not-at-top

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(configs.shapes_budget_override(steps), is_strict=True)
    params.override(
        {
            "task": {
                "train_data": {"input_path": records["train"], "seed": seed},
                "validation_data": {"input_path": records["val"]},
            },
            "trainer": {"checkpoint_interval": steps, "best_checkpoint_export_subdir": ""},
        },
        is_strict=True,
    )
    return params


def run_one(args) -> None:
    """One training run in this process (pretrain, scratch or finetuned); writes its metrics as JSON."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top

    from tfmaskrcnn.cli import train  # pylint: disable=g-import-not-at-top

    tf_keras.utils.set_random_seed(args.seed)
    tf.random.set_seed(args.seed)
    if args.setting == "pretrain":
        records = make_data(args.output, "pretrain", PRETRAIN_CLASSES, args.num_train, args.num_val)
        params = _params(records, args.pretrain_steps, args.seed)
        model_dir = _pretrain_dir(args)
    else:
        records = make_data(args.output, "demo", DEMO_CLASSES, args.num_train, args.num_val)
        params = _params(records, args.steps, args.seed)
        if args.setting == "finetuned":
            params.task.init_checkpoint = _pretrain_dir(args)
            params.task.init_checkpoint_modules = "all"
        model_dir = os.path.join(args.output, f"runs_{args.steps}", f"{args.setting}_seed{args.seed}")
    _, logs = train.run(params, model_dir, "train", post_eval=True)
    result = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
    result.update(setting=args.setting, seed=args.seed, steps=params.trainer.train_steps, model_dir=model_dir)
    init_report = os.path.join(model_dir, "init_report.json")
    if os.path.exists(init_report):
        with open(init_report) as f:
            report = json.load(f)
        result["init"] = {
            "restored": len(report["restored"]),
            "reinitialized": sorted({e["layer"] for e in report["reinitialized"]}),
        }
    write_json(result_path(args.results, args.setting, args.seed), result)


def _pretrain_dir(args) -> str:
    return os.path.join(args.output, f"pretrain_{args.pretrain_steps}")


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def summarize(args) -> str:
    lines = [
        f"Fine-tuned vs from scratch, `tfmaskrcnn_shapes_cpu`, {args.steps} steps on the 3 demo shapes "
        f"({args.num_train} train / {args.num_val} val images); pretrained {args.pretrain_steps} steps on "
        f"{', '.join(PRETRAIN_CLASSES)}; seeds {list(args.seeds)}. Mask AP, mean ± sd over seeds (n per row):",
        "",
        "| setting | n | mask AP | box AP | " + " | ".join(f"mask AP {c}" for c in DEMO_CLASSES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(DEMO_CLASSES),
    ]
    for setting in SETTINGS:
        runs = load(args.results, setting, args.seeds)
        if not runs:
            continue
        cells = [_mean_sd([r.get("mask_AP") for r in runs]), _mean_sd([r.get("AP") for r in runs])]
        cells += [_mean_sd([r.get(f"mask_AP/{c}") for r in runs]) for c in DEMO_CLASSES]
        lines.append(f"| {setting} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spawn(args, setting: str, seed: int) -> None:
    options = []
    for name in ("output", "results", "steps", "pretrain_steps", "num_train", "num_val"):
        options += [f"--{name}", str(getattr(args, name))]
    spawn(__file__, options, setting, seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_out/finetune", help="data and model dirs")
    parser.add_argument("--results", default=None, help="per-run JSON (default benchmarks/results/finetune/STEPS)")
    parser.add_argument("--pretrain_steps", type=int, default=800)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each demo run")
    parser.add_argument("--num_train", type=int, default=200)
    parser.add_argument("--num_val", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.results = args.results or os.path.join(
        REPO, "benchmarks", "results", "finetune", f"pre{args.pretrain_steps}_steps{args.steps}"
    )
    if args.setting:
        run_one(args)
        return 0
    os.makedirs(args.results, exist_ok=True)
    if not os.path.exists(result_path(args.results, "pretrain", 0)):
        print(f"== pretrain {args.pretrain_steps} steps on {', '.join(PRETRAIN_CLASSES)}", flush=True)
        _spawn(args, "pretrain", 0)
    return run_all(
        args.results,
        [(setting, seed) for seed in args.seeds for setting in SETTINGS],  # seed-major: a partial run compares both
        lambda setting, seed: _spawn(args, setting, seed),
        lambda: summarize(args),
    )


if __name__ == "__main__":
    sys.exit(main())
