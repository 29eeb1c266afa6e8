#!/usr/bin/env python
"""The main job on the embedded dataset, no download: shapes -> TFRecords -> train -> evaluate.

Evaluation writes demo_out/eval/report.html (per-class AP, confusion matrix, collapse alarm).

  python tools/demo.py --output demo_out [--train-steps 800] [--class-ratios 1,1,1]

The same steps by hand are in README.md; this script only chains the package's functions.
"""

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_out")
    parser.add_argument("--train-steps", type=int, default=None, help="default: the experiment's own budget")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--class-ratios", default="1,1,1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()

    from tfmaskrcnn.data import convert  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.data.shapes import generator as shapes  # pylint: disable=g-import-not-at-top

    data_dir = os.path.join(args.output, "shapes")
    ratios = [float(r) for r in args.class_ratios.split(",")]
    shapes.generate_shapes_dataset(
        data_dir, num_train=args.num_train, num_val=args.num_val, class_ratios=ratios, seed=args.seed
    )
    records = {}
    for split in ("train", "val"):
        records[split] = os.path.join(args.output, "records", split)
        convert.convert_coco(
            os.path.join(data_dir, "annotations", f"instances_{split}.json"),
            os.path.join(data_dir, split),
            records[split],
            num_shards=2,
        )

    import tf_keras  # pylint: disable=g-import-not-at-top
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    from tfmaskrcnn.cli import train  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.configs import maskrcnn as configs  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.evaluation import summary  # pylint: disable=g-import-not-at-top

    tf_keras.utils.set_random_seed(args.seed)
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(
        {
            "task": {
                "train_data": {"input_path": os.path.join(records["train"], "*.tfrecord")},
                "validation_data": {"input_path": os.path.join(records["val"], "*.tfrecord")},
            },
        },
        is_strict=True,
    )
    if args.train_steps:
        params.override(configs.shapes_budget_override(args.train_steps), is_strict=True)
    model_dir = os.path.join(args.output, "model")
    _, eval_logs = train.run(params, model_dir, "train", post_eval=True)
    print(summary.format_eval_logs(eval_logs))

    # The per-class report: confusion matrix, collapse alarm, worst images per class.
    from tfmaskrcnn import cli  # pylint: disable=g-import-not-at-top

    cli.main(
        [
            "eval",
            "--model_dir",
            model_dir,
            "--data",
            os.path.join(records["val"], "*.tfrecord"),
            "--output",
            os.path.join(args.output, "eval"),
            "--quiet",
        ]
    )
    print(f"\nModel dir: {model_dir}   wall time: {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
