"""`tfmaskrcnn split`: converted records split by image into parts, stratified by class.

    tfmaskrcnn split --data 'records/val/*.tfrecord' --output records/val_parts \\
        [--parts calib=0.5,test=0.5] [--seed 0]

writes one record set per part, each like `tfmaskrcnn convert` writes one:

* `OUT/<part>/<part>-00000-of-0000N.tfrecord`: the records of the part's images, byte for byte;
* `OUT/<part>/label_map.json` (the source's) and `OUT/<part>/dataset_stats.json` (its classes);
* `OUT/split_report.json`: seed, fractions, the images and objects of every class in every part.

Why: per-class score thresholds and NorCal's γ (`tfmaskrcnn calibrate`) are chosen on data, and
numbers measured on the same data are optimistic. Split the validation records once: calibrate
on one part, report `tfmaskrcnn eval` on the other. (With a single dataset, the same command
makes train / val / calib parts: `--parts train=0.8,val=0.1,calib=0.1`.)

Stratified by image (an image, with all its objects, goes to one part): images are dealt out
rarest class first, each to the part that still lacks the class, else to the part furthest
below its share of that class's images (iterative stratification, Sechidis et al. 2011), so
every class that has at least as many images as there are parts appears in every part. Images
without objects are dealt by the parts' shares of images. The same seed gives the same split.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import sys
import uuid
from typing import Sequence

import numpy as np

from tfmaskrcnn.io import DATASET_STATS_FILENAME, LABEL_MAP_FILENAME, join, write_atomic

REPORT_FILENAME = "split_report.json"
IMAGES_PER_SHARD = 1000
DEFAULT_PARTS = "calib=0.5,test=0.5"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class SplitError(ValueError):
    pass


def parse_parts(text: str) -> dict[str, float]:
    """`calib=0.5,test=0.5` -> {'calib': 0.5, 'test': 0.5}; the fractions must add up to 1."""
    parts: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = item.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not _NAME.fullmatch(name) or not 0.0 < fraction < 1.0 or name in parts:
            raise SplitError(
                f"--parts {text!r}: expected distinct NAME=FRACTION items, names of letters, digits, '_' or '-' "
                "and fractions in (0, 1), e.g. calib=0.5,test=0.5"
            )
        parts[name] = fraction
    if len(parts) < 2:
        raise SplitError(f"--parts {text!r}: give at least two parts, e.g. calib=0.5,test=0.5")
    if abs(sum(parts.values()) - 1.0) > 1e-6:
        raise SplitError(f"--parts {text!r}: the fractions add up to {sum(parts.values()):g}, not 1")
    return parts


def assign_parts(image_classes: Sequence[set], fractions: Sequence[float], seed: int = 0) -> np.ndarray:
    """The part index of each image: stratified by class (see the module doc), reproducible by `seed`."""
    num_images, num_parts = len(image_classes), len(fractions)
    fractions = np.asarray(fractions, np.float64)
    order = np.random.default_rng(seed).permutation(num_images)
    rank = np.empty(num_images, np.int64)
    rank[order] = np.arange(num_images)
    classes = sorted({c for s in image_classes for c in s})
    images_of = {c: [i for i in order if c in image_classes[i]] for c in classes}
    wanted = {c: fractions * len(images_of[c]) for c in classes}  # images of c each part should get
    wanted_images = fractions * num_images
    has = {c: np.zeros(num_parts, bool) for c in classes}
    part = np.full(num_images, -1, np.int64)

    def give(i: int, p: int) -> None:
        part[i] = p
        wanted_images[p] -= 1
        for c in image_classes[i]:
            wanted[c][p] -= 1
            has[c][p] = True

    left = {c: list(images) for c, images in images_of.items()}
    while True:
        for c in classes:
            left[c] = [i for i in left[c] if part[i] < 0]
        pending = [c for c in classes if left[c]]
        if not pending:
            break
        rarest = min(pending, key=lambda c: (len(left[c]), c))
        for i in left[rarest]:
            lacking = np.flatnonzero(~has[rarest])
            candidates = lacking if lacking.size else np.arange(num_parts)
            # The furthest below its share of this class, then of images; then the first part.
            p = max(candidates, key=lambda q: (wanted[rarest][q], wanted_images[q], -q))
            give(i, int(p))
    for i in sorted(np.flatnonzero(part < 0), key=lambda i: rank[i]):
        give(int(i), int(np.argmax(wanted_images)))
    return part


def read_records(pattern: str) -> list[tuple[bytes, int, list[int], list[int]]]:
    """(serialized record, image id, class labels, crowd flags) of every record of `pattern`."""
    import tensorflow as tf

    from tfmaskrcnn.data.records import tfrecord_files

    out = []
    for path in tfrecord_files(pattern):
        for n, record in enumerate(tf.data.TFRecordDataset(path)):
            serialized = record.numpy()
            try:
                features = tf.train.Example.FromString(serialized).features.feature
            except Exception:  # noqa: BLE001  (protobuf's DecodeError is not importable the same way everywhere)
                raise SplitError(f"{path}: record {n} is not a tf.Example; write shards with `tfmaskrcnn convert`")
            if "image/source_id" not in features:
                raise SplitError(f"{path}: record {n} has no image/source_id; write shards with `tfmaskrcnn convert`")
            source_id = features["image/source_id"].bytes_list.value[0].decode()
            labels = list(features["image/object/class/label"].int64_list.value)
            crowd = list(features["image/object/is_crowd"].int64_list.value) or [0] * len(labels)
            if len(crowd) != len(labels):
                raise SplitError(f"{path}: record {n} has {len(labels)} labels and {len(crowd)} is_crowd flags")
            if not source_id.isdigit():
                raise SplitError(f"{path}: record {n} has image/source_id {source_id!r}; it must be a numeric string")
            out.append((serialized, int(source_id), labels, crowd))
    return out


def split_records(data: str, output_dir: str, parts: dict[str, float], seed: int = 0, progress: bool = True) -> dict:
    """Splits the records of `data` into OUT/<part>/ record sets; returns the split report."""
    import tensorflow as tf

    from tfmaskrcnn.data.convert import _StatsCounter  # the counts convert writes, in the same layout
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map

    map_path = find_label_map(data)
    if not map_path:
        raise SplitError(f"--data {data}: no {LABEL_MAP_FILENAME} beside the records; split the output of convert")
    label_map = LabelMap.load(map_path)
    records = read_records(data)
    ids = [r[1] for r in records]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, n in collections.Counter(ids).items() if n > 1)
        raise SplitError(f"--data {data}: image/source_id {duplicate} appears in more than one record")
    too_small = {name: f * len(records) for name, f in parts.items() if f * len(records) < 1}
    if too_small:
        raise SplitError(
            f"--data {data} has {len(records)} images: parts {sorted(too_small)} would get less than one; "
            "give them larger fractions"
        )
    for labels in (r[2] for r in records):
        bad = sorted({c for c in labels if not 1 <= c <= label_map.num_classes})
        if bad:
            raise SplitError(f"--data {data}: class labels {bad} are not in {map_path} (1..{label_map.num_classes})")
    image_classes = [{c for c, crowd in zip(r[2], r[3]) if not crowd} for r in records]
    assignment = assign_parts(image_classes, list(parts.values()), seed)

    report = {
        "data": data,
        "label_map": map_path,
        "seed": seed,
        "parts": {},
        "missing": {},
        "num_images": len(records),
    }
    for p, (name, fraction) in enumerate(parts.items()):
        members = [records[i] for i in np.flatnonzero(assignment == p)]
        directory = join(output_dir, name)
        shards = write_shards(directory, name, [m[0] for m in members])
        counter = _StatsCounter(label_map)
        for _, image_id, labels, crowd in members:
            counter.add(image_id, [(c, bool(k)) for c, k in zip(labels, crowd)])
        stats = counter.to_json_dict()
        stats["source"] = {"split_of": data, "part": name, "fraction": fraction, "seed": seed, "shards": shards}
        label_map.save(join(directory, LABEL_MAP_FILENAME))
        write_atomic(join(directory, DATASET_STATS_FILENAME), json.dumps(stats, indent=2) + "\n")
        report["parts"][name] = {
            "fraction": fraction,
            "directory": directory,
            "records": join(directory, "*.tfrecord"),
            "num_images": stats["num_images"],
            "images_without_instances": stats["images_without_instances"],
            "classes": {c["name"]: {"images": c["images"], "instances": c["instances"]} for c in stats["classes"]},
        }
        if progress:
            print(f"{name}: {stats['num_images']} images -> {directory}", file=sys.stderr)
    for name in label_map.names:
        absent = [p for p, part in report["parts"].items() if not part["classes"][name]["images"]]
        if absent:
            total = sum(part["classes"][name]["images"] for part in report["parts"].values())
            report["missing"][name] = (
                f"in {total} image(s), too few for {len(parts)} parts: none in {', '.join(absent)}"
            )
    tf.io.gfile.makedirs(output_dir)
    write_atomic(join(output_dir, REPORT_FILENAME), json.dumps(report, indent=2) + "\n")
    return report


def write_shards(directory: str, prefix: str, serialized: Sequence[bytes]) -> list[str]:
    """Writes the records into `prefix-XXXXX-of-YYYYY.tfrecord` shards under temporary names, renames
    them when all are complete and removes stale shards of the prefix; returns the shard names."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    num_shards = max(1, math.ceil(len(serialized) / IMAGES_PER_SHARD))
    names = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    tag = uuid.uuid4().hex[:8]
    temporaries = [join(directory, f"{n}.tmp-{tag}") for n in names]
    try:
        writers = [tf.io.TFRecordWriter(t) for t in temporaries]
        for n, record in enumerate(serialized):
            writers[n % num_shards].write(record)
        for writer in writers:
            writer.close()
        for temporary, name in zip(temporaries, names):
            tf.io.gfile.rename(temporary, join(directory, name), overwrite=True)
    finally:
        for temporary in temporaries:
            if tf.io.gfile.exists(temporary):
                tf.io.gfile.remove(temporary)
    own = re.compile(rf"{re.escape(prefix)}-\d{{5}}-of-\d{{5}}\.tfrecord")
    for name in tf.io.gfile.listdir(directory):
        if own.fullmatch(name) and name not in names:
            tf.io.gfile.remove(join(directory, name))
    return names


def format_report(report: dict) -> str:
    names = list(report["parts"])
    lines = [
        f"{report['num_images']} images of {report['data']} split by image (seed {report['seed']}): "
        + ", ".join(f"{n} {p['num_images']}" for n, p in report["parts"].items()),
        f"{'class':>16}  " + "  ".join(f"{n[:16]:>16}" for n in names) + "   (images / objects)",
    ]
    classes = next(iter(report["parts"].values()))["classes"]
    for cls in classes:
        cells = [report["parts"][n]["classes"][cls] for n in names]
        lines.append(f"{cls[:16]:>16}  " + "  ".join(f"{c['images']:>8} / {c['instances']:<5}" for c in cells))
    for cls, why in report["missing"].items():
        lines.append(f"warning: '{cls}' {why}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="records of `tfmaskrcnn convert`, e.g. 'records/val/*.tfrecord'")
    parser.add_argument("--output", required=True, help="folder for one record set per part (OUT/<part>/)")
    parser.add_argument(
        "--parts",
        default=DEFAULT_PARTS,
        help=f"NAME=FRACTION,... adding up to 1 (default {DEFAULT_PARTS}: calibrate on one, evaluate on the other)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same split (default 0)")


def main(args: argparse.Namespace) -> int:
    try:
        parts = parse_parts(args.parts)
        if os.path.abspath(args.output) in {os.path.abspath(os.path.dirname(p)) for p in args.data.split(",")}:
            raise SplitError(f"--output {args.output} is the folder of --data; write the parts elsewhere")
        report = split_records(args.data, args.output, parts, seed=args.seed)
    except (SplitError, FileNotFoundError) as error:
        print(f"tfmaskrcnn split: error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"written to {args.output}/<part>/ ({', '.join(report['parts'])}) and {join(args.output, REPORT_FILENAME)}")
    return 0
