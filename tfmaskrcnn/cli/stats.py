"""`tfmaskrcnn stats`: class statistics, class weights and repeat factors of a dataset.

    tfmaskrcnn stats OUT                     # table: counts, weights per scheme, repeat factors
    tfmaskrcnn stats OUT --format yaml       # snippet to paste into an experiment config
    tfmaskrcnn stats "OUT/train-*.tfrecord" --format json

The statistics come from `tfmaskrcnn.data.stats`; the weights from `tfmaskrcnn.losses` and
the repeat factors from `tfmaskrcnn.dataloaders.sampling`, the same functions training uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from tfmaskrcnn import io, losses
from tfmaskrcnn.data.stats import (
    COMPUTED_SCHEMES,
    STATS_FILE,
    ClassStats,
    data_directory,
    load_class_stats,
    load_dataset_stats,
)
from tfmaskrcnn.dataloaders import sampling


def balance_report(
    stats: ClassStats,
    scheme: str,
    beta: float,
    background_weight: float,
    max_ratio: Optional[float],
    threshold: Optional[float],
) -> dict:
    """Everything the command prints, as plain data (the json format)."""
    frequency = stats.image_frequency()
    chosen = threshold is None
    threshold = sampling.choose_threshold(frequency) if chosen else float(threshold)
    repeat = sampling.repeat_factors(frequency, threshold)
    after = (
        sampling.expected_image_frequency_after(stats.image_classes, repeat)
        if stats.image_classes is not None
        else None
    )
    weights = {
        name: losses.compute_class_weights(
            stats.instance_counts, name, beta=beta, background_weight=background_weight, max_ratio=max_ratio
        )
        for name in COMPUTED_SCHEMES
    }
    classes = []
    for i, name in enumerate(stats.names):
        classes.append(
            {
                "id": i + 1,
                "name": name,
                "instances": int(stats.instance_counts[i]),
                "images": int(stats.image_counts[i]),
                "image_frequency": float(frequency[i]),
                "weights": {scheme_name: float(w[i + 1]) for scheme_name, w in weights.items()},
                "repeat_factor": float(repeat[i]),
                "image_frequency_after_sampling": None if after is None else float(after[i]),
            }
        )
    return {
        "num_images": stats.num_images,
        "num_instances": int(stats.instance_counts.sum()),
        "scheme": scheme,
        "beta": beta,
        "background_weight": background_weight,
        "max_ratio": max_ratio,
        "class_weights": weights[scheme].tolist(),
        "threshold": threshold,
        "threshold_rule": "max image frequency / 2" if chosen else "given",
        "classes": classes,
    }


def format_table(report: dict) -> str:
    lines = [
        f"{report['num_images']} images, {report['num_instances']} non-crowd instances, "
        f"{len(report['classes'])} classes"
    ]
    header = ["id", "name", "instances", "images", "img_freq"] + [f"w_{s}" for s in COMPUTED_SCHEMES[1:]]
    header += ["repeat", "freq_after"]
    rows = [header]
    for entry in report["classes"]:
        after = entry["image_frequency_after_sampling"]
        rows.append(
            [
                str(entry["id"]),
                entry["name"],
                str(entry["instances"]),
                str(entry["images"]),
                f"{entry['image_frequency']:.4f}",
            ]
            + [f"{entry['weights'][s]:.4g}" for s in COMPUTED_SCHEMES[1:]]
            + [f"{entry['repeat_factor']:.3g}", "-" if after is None else f"{after:.4f}"]
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    for row in rows:
        lines.append(
            "  ".join(
                cell.rjust(width) if col != 1 else cell.ljust(width)
                for col, (cell, width) in enumerate(zip(row, widths))
            )
        )
    counts = [c["instances"] for c in report["classes"] if c["instances"] > 0]
    if counts:
        lines.append(f"imbalance (most / fewest instances): {max(counts) / min(counts):.1f}")
    lines.append(
        f"weights: foreground normalized to an instance-weighted mean of 1, background "
        f"{report['background_weight']:g}, beta {report['beta']:g}"
    )
    lines.append(f"repeat-factor threshold {report['threshold']:.4g} ({report['threshold_rule']})")
    if report["classes"] and report["classes"][0]["image_frequency_after_sampling"] is None:
        lines.append("freq_after needs each image's classes: point DATA at the TFRecords (--source tfrecord)")
    return "\n".join(lines)


def format_yaml(report: dict, data: str) -> str:
    weights = ", ".join(f"{w:.6g}" for w in report["class_weights"])
    return "\n".join(
        [
            f"# tfmaskrcnn stats {data}: {report['scheme']} weights (background first), "
            f"repeat-factor threshold {report['threshold']:.6g} ({report['threshold_rule']})",
            "task:",
            "  class_balance:",
            "    weighting:",
            "      scheme: explicit",
            f"      weights: [{weights}]",
            "  train_data:",
            "    sampling:",
            "      type: repeat_factor",
            f"      threshold: {report['threshold']:.6g}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="converter output directory, or a TFRecord glob (quote it)")
    parser.add_argument(
        "--source",
        choices=("auto", "json", "tfrecord"),
        default="auto",
        help="read dataset_stats.json or scan the TFRecords (auto: scan when there are shards)",
    )
    parser.add_argument(
        "--scheme",
        choices=COMPUTED_SCHEMES,
        default="sqrt_inverse",
        help="weighting scheme written by --format yaml/json (the table shows all)",
    )
    parser.add_argument("--beta", type=float, default=0.999, help="beta of effective_number")
    parser.add_argument("--background-weight", type=float, default=1.0)
    parser.add_argument("--max-ratio", type=float, default=None, help="cap largest/smallest foreground weight")
    parser.add_argument(
        "--threshold", type=float, default=None, help="repeat-factor threshold t; default max image frequency / 2"
    )
    parser.add_argument("--format", choices=("table", "yaml", "json"), default="table")
    parser.add_argument("--output", default=None, help="write to this file (atomically) instead of stdout")


def main(args: argparse.Namespace) -> int:
    import tensorflow as tf

    stats = load_class_stats(args.data, args.source)
    stats_path = io.join(data_directory(args.data), STATS_FILE)
    if stats.image_classes is not None and tf.io.gfile.isdir(args.data) and tf.io.gfile.exists(stats_path):
        disagreements = load_dataset_stats(stats_path).differences(stats)
        if disagreements:
            print(f"warning: {stats_path} disagrees with the TFRecords: " + "; ".join(disagreements), file=sys.stderr)
    report = balance_report(stats, args.scheme, args.beta, args.background_weight, args.max_ratio, args.threshold)
    if args.format == "json":
        text = json.dumps(report, indent=2)
    elif args.format == "yaml":
        text = format_yaml(report, args.data)
    else:
        text = format_table(report)
    if args.output is None:
        print(text)
    else:
        io.write_atomic(args.output, text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
