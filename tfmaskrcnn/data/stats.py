"""Per-class statistics of a converted dataset (the `tfmaskrcnn stats` command is `tfmaskrcnn.cli.stats`).

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

import dataclasses
import json
import os
import posixpath
import re
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.io import DATASET_STATS_FILENAME as STATS_FILE
from tfmaskrcnn.io import LABEL_MAP_FILENAME

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
        for label, mine, theirs in (
            ("instances", self.instance_counts, other.instance_counts),
            ("images", self.image_counts, other.image_counts),
        ):
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
        raise ValueError(
            f"{path}: missing or non-integer field ({error}); each class needs "
            f"'instances' and 'images', the file 'num_images'"
        ) from error
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
                    raise ValueError(
                        f"{path}: record {record} has {labels.size} labels but {crowd.size} "
                        "is_crowd flags; re-run `tfmaskrcnn convert`"
                    )
                kept = labels[crowd == 0] if crowd.size else labels
                bad = kept[(kept < 1) | (kept > highest)]
                if bad.size:
                    raise ValueError(
                        f"{path}: record {record} has class label {int(bad[0])}; labels must be "
                        f"{limit} (0 is background): fix the label map and re-run `tfmaskrcnn convert`"
                    )
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
            raise ValueError(
                f"{path}: unreadable after {records_read()} records ({reason}); "
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
            files = sorted(tf.io.gfile.glob(io.join(data, pattern)))
            if files:
                return files
        return []
    return sorted(f for pattern in data.split(",") if pattern.strip() for f in tf.io.gfile.glob(pattern.strip()))


def _shards_listed_in_stats(directory: str) -> List[str]:
    """The shards dataset_stats.json describes, when it names them and they all exist."""
    import tensorflow as tf

    path = io.join(directory, STATS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    data = _read_json(path)
    names = data.get("source", {}).get("shards") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names:
        return []
    files = [io.join(directory, str(name)) for name in names]
    return files if all(tf.io.gfile.exists(f) for f in files) else []


def data_directory(data: str) -> str:
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

    directory = data_directory(data)
    stats_path = io.join(directory, STATS_FILE)
    label_map_path = io.join(directory, LABEL_MAP_FILENAME)
    files = find_tfrecords(data) if source != "json" else []
    if source == "json" or (source == "auto" and not files and tf.io.gfile.isdir(data)):
        if not tf.io.gfile.exists(stats_path):
            raise FileNotFoundError(
                f"{data}: no TFRecord shards and no {STATS_FILE}; point DATA at the "
                "output directory of `tfmaskrcnn convert` or at a TFRecord glob"
            )
        return load_dataset_stats(stats_path)
    if not files:
        raise FileNotFoundError(f"{data}: no TFRecord files match; give the converter output directory or a glob")
    names = LabelMap.load(label_map_path).names if tf.io.gfile.exists(label_map_path) else None
    return compute_from_tfrecords(files, names, show_progress=show_progress)
