"""Per-class statistics of a converted dataset, and the `tfmaskrcnn stats` command.

`ClassStats` holds class names, non-crowd instance and image counts and the image
count, read from the converter's `dataset_stats.json` or computed in one pass over
the TFRecord shards (only the label and crowd features are parsed). The pass also
keeps each image's set of classes, which the expected frequencies after
repeat-factor sampling need.

    tfmaskrcnn stats OUT                     # table: counts, weights per scheme, repeat factors
    tfmaskrcnn stats OUT --format yaml       # snippet to paste into an experiment config
    tfmaskrcnn stats "OUT/train-*.tfrecord" --format json

Paths go through `tf.io.gfile`, so gs:// works. In a converter output directory the
shards listed in its dataset_stats.json are read (one split per directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import posixpath
import re
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tfmaskrcnn import losses
from tfmaskrcnn.data import sampling
from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap, write_text_atomic

STATS_FILE = "dataset_stats.json"
# The converter's `train-00000-of-00004.tfrecord`, then the `train.tfrecord-00000-of-00004` of
# other tools (never the converter's `.tfrecord.tmp-*` temporaries).
TFRECORD_PATTERNS = ("*.tfrecord", "*.tfrecord-*-of-*")
COMPUTED_SCHEMES = ("none", "inverse", "sqrt_inverse", "effective_number")


@dataclasses.dataclass
class ClassStats:
    """Class statistics; per-class lists have K entries, entry i is class id i + 1."""

    names: List[str]
    instance_counts: np.ndarray
    image_counts: np.ndarray
    num_images: int
    # Each image's non-crowd class ids; None when read from dataset_stats.json.
    image_classes: Optional[List[Tuple[int, ...]]] = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def image_frequency(self) -> np.ndarray:
        if self.num_images == 0:
            raise ValueError("the dataset has no images")
        return self.image_counts / self.num_images

    def present_class_ids(self) -> List[int]:
        return [i + 1 for i, count in enumerate(self.image_counts) if count > 0]

    def differences(self, other: "ClassStats") -> List[str]:
        """Human-readable disagreements with `other` (empty when they agree)."""
        found = []
        if self.num_images != other.num_images:
            found.append(f"num_images {self.num_images} vs {other.num_images}")
        if self.names != other.names:
            found.append(f"class names {self.names} vs {other.names}")
        for label, mine, theirs in (("instances", self.instance_counts, other.instance_counts),
                                    ("images", self.image_counts, other.image_counts)):
            if len(mine) != len(theirs) or np.any(mine != theirs):
                found.append(f"{label} per class {mine.tolist()} vs {theirs.tolist()}")
        return found


def _names_in_id_order(entries, path: str) -> List[str]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty 'classes' list of {{'id', 'name'}} entries")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("id") != position + 1 or "name" not in entry:
            raise ValueError(
                f"{path}: classes[{position}] is {entry!r}; ids must be 1..K in order (0 is "
                f"background), each with a name: re-run `tfmaskrcnn convert` to rewrite it"
            )
    return [str(entry["name"]) for entry in entries]


def _read_json(path: str):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None


def load_dataset_stats(path: str) -> ClassStats:
    """Reads the converter's dataset_stats.json."""
    data = _read_json(path)
    entries = data.get("classes") if isinstance(data, dict) else None
    names = _names_in_id_order(entries, path)
    try:
        instances = np.array([int(entry["instances"]) for entry in entries], dtype=np.int64)
        images = np.array([int(entry["images"]) for entry in entries], dtype=np.int64)
        num_images = int(data["num_images"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: missing or non-integer field ({error}); each class needs "
                         f"'instances' and 'images', the file 'num_images'") from error
    return ClassStats(names, instances, images, num_images)


def compute_from_tfrecords(
    files: Sequence[str], names: Optional[Sequence[str]] = None, show_progress: bool = True
) -> ClassStats:
    """One pass over TFRecord shards of Model Garden tf.Examples.

    Parses only `image/object/class/label` and `image/object/is_crowd`. With
    `names` (from the label map) labels must be in 1..len(names); without, K is the
    largest label seen and classes are named `class_<id>`.
    """
    import tensorflow as tf
    from tqdm import tqdm

    if not files:
        raise ValueError("no TFRecord files to read")
    features = {
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    }

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, features)
        return {key: tf.RaggedTensor.from_sparse(value) for key, value in parsed.items()}

    # Without a label map any positive label is accepted; K is then the largest seen.
    highest = len(names) if names is not None else np.iinfo(np.int64).max
    limit = f"1..{len(names)}" if names is not None else "1..K"
    image_classes: List[Tuple[int, ...]] = []
    instance_labels: List[np.ndarray] = []
    progress = tqdm(desc="reading class labels", unit=" images", disable=not show_progress, file=sys.stderr)
    for path in sorted(files):
        record = 0
        dataset = tf.data.TFRecordDataset(path).batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        for batch in _read_batches(tf, dataset, path, lambda: record):
            for labels, crowd in zip(batch["image/object/class/label"], batch["image/object/is_crowd"]):
                labels = np.asarray(labels, dtype=np.int64)
                crowd = np.asarray(crowd, dtype=np.int64)
                if crowd.size not in (0, labels.size):
                    raise ValueError(f"{path}: record {record} has {labels.size} labels but {crowd.size} "
                                     "is_crowd flags; re-run `tfmaskrcnn convert`")
                kept = labels[crowd == 0] if crowd.size else labels
                bad = kept[(kept < 1) | (kept > highest)]
                if bad.size:
                    raise ValueError(f"{path}: record {record} has class label {int(bad[0])}; labels must be "
                                     f"{limit} (0 is background): fix the label map and re-run `tfmaskrcnn convert`")
                instance_labels.append(kept)
                image_classes.append(tuple(sorted(set(kept.tolist()))))
                record += 1
                progress.update(1)
    progress.close()

    all_labels = np.concatenate(instance_labels) if instance_labels else np.zeros(0, np.int64)
    num_classes = len(names) if names is not None else int(all_labels.max(initial=0))
    class_names = list(names) if names is not None else [f"class_{i}" for i in range(1, num_classes + 1)]
    instances = np.bincount(all_labels - 1, minlength=num_classes).astype(np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    for classes in image_classes:
        for class_id in classes:
            images[class_id - 1] += 1
    return ClassStats(class_names, instances, images, len(image_classes), image_classes)


def _read_batches(tf, dataset, path, records_read):
    """Yields the batches; a truncated or non-TFRecord file is reported by name."""
    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            # TF prefixes the reason with "{{function_node ...}}" and suffixes " [Op:...]".
            reason = re.sub(r"\{\{.*?\}\}\s*", "", error.message).split(" [Op:")[0].strip()
            raise ValueError(f"{path}: unreadable after {records_read()} records ({reason}); "
                             "the file is truncated or not a TFRecord of tf.Examples: re-run `tfmaskrcnn convert`"
                             ) from error


def find_tfrecords(data: str) -> List[str]:
    """TFRecord files of a converter output directory, or of a glob (comma-separated globs too)."""
    import tensorflow as tf

    if tf.io.gfile.isdir(data):
        listed = _shards_listed_in_stats(data)
        if listed:
            return listed
        for pattern in TFRECORD_PATTERNS:
            files = sorted(tf.io.gfile.glob(_join(data, pattern)))
            if files:
                return files
        return []
    return sorted(f for pattern in data.split(",") if pattern.strip() for f in tf.io.gfile.glob(pattern.strip()))


def _shards_listed_in_stats(directory: str) -> List[str]:
    """The shards dataset_stats.json describes, when it names them and they all exist."""
    import tensorflow as tf

    path = _join(directory, STATS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    data = _read_json(path)
    names = data.get("source", {}).get("shards") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names:
        return []
    files = [_join(directory, str(name)) for name in names]
    return files if all(tf.io.gfile.exists(f) for f in files) else []


def _join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if "://" in directory else os.path.join(directory, name)


def _data_directory(data: str) -> str:
    import tensorflow as tf

    if tf.io.gfile.isdir(data):
        return data
    first = data.split(",")[0].strip()
    return (posixpath.dirname(first) if "://" in first else os.path.dirname(first)) or "."


def load_class_stats(data: str, source: str = "auto", show_progress: bool = True) -> ClassStats:
    """ClassStats of a converter output directory or a TFRecord glob.

    source: `json` reads dataset_stats.json, `tfrecord` scans the shards, `auto`
    scans the shards when there are any (it also gives per-image class sets).
    """
    import tensorflow as tf

    directory = _data_directory(data)
    stats_path = _join(directory, STATS_FILE)
    label_map_path = _join(directory, LABEL_MAP_FILENAME)
    files = find_tfrecords(data) if source != "json" else []
    if source == "json" or (source == "auto" and not files and tf.io.gfile.isdir(data)):
        if not tf.io.gfile.exists(stats_path):
            raise FileNotFoundError(f"{data}: no TFRecord shards and no {STATS_FILE}; point DATA at the "
                                    "output directory of `tfmaskrcnn convert` or at a TFRecord glob")
        return load_dataset_stats(stats_path)
    if not files:
        raise FileNotFoundError(f"{data}: no TFRecord files match; give the converter output directory or a glob")
    names = LabelMap.load(label_map_path).names if tf.io.gfile.exists(label_map_path) else None
    return compute_from_tfrecords(files, names, show_progress=show_progress)


def balance_report(stats: ClassStats, scheme: str, beta: float, background_weight: float,
                   max_ratio: Optional[float], threshold: Optional[float]) -> dict:
    """Everything the command prints, as plain data (the json format)."""
    frequency = stats.image_frequency()
    chosen = threshold is None
    threshold = sampling.choose_threshold(frequency) if chosen else float(threshold)
    repeat = sampling.repeat_factors(frequency, threshold)
    after = (sampling.expected_image_frequency_after(stats.image_classes, repeat)
             if stats.image_classes is not None else None)
    weights = {name: losses.compute_class_weights(stats.instance_counts, name, beta=beta,
                                                  background_weight=background_weight, max_ratio=max_ratio)
               for name in COMPUTED_SCHEMES}
    classes = []
    for i, name in enumerate(stats.names):
        classes.append({
            "id": i + 1, "name": name, "instances": int(stats.instance_counts[i]),
            "images": int(stats.image_counts[i]), "image_frequency": float(frequency[i]),
            "weights": {scheme_name: float(w[i + 1]) for scheme_name, w in weights.items()},
            "repeat_factor": float(repeat[i]),
            "image_frequency_after_sampling": None if after is None else float(after[i]),
        })
    return {
        "num_images": stats.num_images, "num_instances": int(stats.instance_counts.sum()),
        "scheme": scheme, "beta": beta, "background_weight": background_weight, "max_ratio": max_ratio,
        "class_weights": weights[scheme].tolist(),
        "threshold": threshold,
        "threshold_rule": "max image frequency / 2" if chosen else "given",
        "classes": classes,
    }


def format_table(report: dict) -> str:
    lines = [f"{report['num_images']} images, {report['num_instances']} non-crowd instances, "
             f"{len(report['classes'])} classes"]
    header = ["id", "name", "instances", "images", "img_freq"] + [f"w_{s}" for s in COMPUTED_SCHEMES[1:]]
    header += ["repeat", "freq_after"]
    rows = [header]
    for entry in report["classes"]:
        after = entry["image_frequency_after_sampling"]
        rows.append([str(entry["id"]), entry["name"], str(entry["instances"]), str(entry["images"]),
                     f"{entry['image_frequency']:.4f}"]
                    + [f"{entry['weights'][s]:.4g}" for s in COMPUTED_SCHEMES[1:]]
                    + [f"{entry['repeat_factor']:.3g}", "-" if after is None else f"{after:.4f}"])
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.rjust(width) if col != 1 else cell.ljust(width)
                               for col, (cell, width) in enumerate(zip(row, widths))))
    counts = [c["instances"] for c in report["classes"] if c["instances"] > 0]
    if counts:
        lines.append(f"imbalance (most / fewest instances): {max(counts) / min(counts):.1f}")
    lines.append(f"weights: foreground normalized to an instance-weighted mean of 1, background "
                 f"{report['background_weight']:g}, beta {report['beta']:g}")
    lines.append(f"repeat-factor threshold {report['threshold']:.4g} ({report['threshold_rule']})")
    if report["classes"] and report["classes"][0]["image_frequency_after_sampling"] is None:
        lines.append("freq_after needs each image's classes: point DATA at the TFRecords (--source tfrecord)")
    return "\n".join(lines)


def format_yaml(report: dict, data: str) -> str:
    weights = ", ".join(f"{w:.6g}" for w in report["class_weights"])
    return "\n".join([
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
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="converter output directory, or a TFRecord glob (quote it)")
    parser.add_argument("--source", choices=("auto", "json", "tfrecord"), default="auto",
                        help="read dataset_stats.json or scan the TFRecords (auto: scan when there are shards)")
    parser.add_argument("--scheme", choices=COMPUTED_SCHEMES, default="sqrt_inverse",
                        help="weighting scheme written by --format yaml/json (the table shows all)")
    parser.add_argument("--beta", type=float, default=0.999, help="beta of effective_number")
    parser.add_argument("--background-weight", type=float, default=1.0)
    parser.add_argument("--max-ratio", type=float, default=None, help="cap largest/smallest foreground weight")
    parser.add_argument("--threshold", type=float, default=None,
                        help="repeat-factor threshold t; default max image frequency / 2")
    parser.add_argument("--format", choices=("table", "yaml", "json"), default="table")
    parser.add_argument("--output", default=None, help="write to this file (atomically) instead of stdout")


def main(args: argparse.Namespace) -> int:
    import tensorflow as tf

    stats = load_class_stats(args.data, args.source)
    stats_path = _join(_data_directory(args.data), STATS_FILE)
    if stats.image_classes is not None and tf.io.gfile.isdir(args.data) and tf.io.gfile.exists(stats_path):
        disagreements = load_dataset_stats(stats_path).differences(stats)
        if disagreements:
            print(f"warning: {stats_path} disagrees with the TFRecords: " + "; ".join(disagreements),
                  file=sys.stderr)
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
        write_text_atomic(args.output, text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
