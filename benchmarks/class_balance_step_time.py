#!/usr/bin/env python
"""Training step time of the class-balance settings vs stock, side by side in one run.

  python benchmarks/class_balance_step_time.py --output bench_out/step_time --steps 30 --rounds 5

Every task is built from `tfmaskrcnn_shapes_cpu` on the same imbalanced shapes records
(0.9/0.07/0.03); they differ only in `task.class_balance`, `task.train_data.sampling` and,
for the sigmoid losses, the detection generator's score function (not used in training).
Variants: stock, class weights + repeat-factor sampling, and the long-tail losses seesaw,
eqlv2, federated (`--variants` picks some). Timing blocks alternate between the variants
(after a warm-up that includes tracing), and the median per-step time of each is reported
with its ratio to stock.
"""

import argparse
import os
import statistics
import sys
import time

VARIANTS = {
    "stock": {},
    "weights+sampling": {
        "class_balance": {"weighting": {"scheme": "sqrt_inverse"}},
        "train_data": {"sampling": {"type": "repeat_factor"}},
    },
    "seesaw": {"class_balance": {"loss_type": "seesaw"}},
    "eqlv2": {
        "class_balance": {"loss_type": "eqlv2"},
        "model": {"detection_generator": {"use_sigmoid_probability": True}},
    },
    "federated": {
        "class_balance": {"loss_type": "federated"},
        "model": {"detection_generator": {"use_sigmoid_probability": True}},
    },
}


def build(records: dict, overrides: dict):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from official.core import exp_factory, task_factory  # pylint: disable=g-import-not-at-top

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(
        {"task": {"train_data": {"input_path": records["train"]}, "validation_data": {"input_path": records["val"]}}},
        is_strict=True,
    )
    if overrides:
        params.override({"task": overrides}, is_strict=True)
    task = task_factory.get_task(params.task)
    model = task.build_model()
    optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
    metrics = task.build_metrics(training=True)
    iterator = iter(task.build_inputs(params.task.train_data))

    @tf.function
    def step(inputs):
        return task.train_step(inputs, model, optimizer, metrics)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            logs = step(next(iterator))
        float(logs["loss"])  # wait for the last step
        return (time.perf_counter() - start) / n

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_out/step_time")
    parser.add_argument("--steps", type=int, default=30, help="steps per timing block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ", ".join(VARIANTS))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from class_balance_experiment import MIXES, make_data  # pylint: disable=g-import-not-at-top

    records = make_data(args.output, MIXES["three"])
    names = ["stock"] + [n for n in args.variants.split(",") if n and n != "stock"]
    runners = {name: build(records, VARIANTS[name]) for name in names}
    for run in runners.values():
        run(5)  # tracing and warm-up
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            times[name].append(run(args.steps))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(
            f"{name:>18}: {value * 1000:.1f} ms/step  (blocks: "
            + ", ".join(f"{v * 1000:.0f}" for v in times[name])
            + ")"
        )
    for name in names[1:]:
        print(f"ratio {name} / stock: {medians[name] / medians['stock']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
