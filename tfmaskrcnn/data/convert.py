"""`tfmaskrcnn convert`: a COCO instances dataset to TFRecord shards with its label map.

    tfmaskrcnn convert --annotations instances_train.json --images train/ --output data/train

writes into OUT:

* `<prefix>-00000-of-0000N.tfrecord`: one tf.train.Example per image, in the layout
  Model Garden's `TfExampleDecoder(include_mask=True)` reads (numeric
  `image/source_id` = COCO image id, boxes normalised to [0, 1], contiguous labels
  1..K, one 0/1 PNG per instance mask). `image/object/class/text`,
  `image/object/annotation_id` and `image/filename` are extra keys for tracing.
* `label_map.json`: contiguous ids, names, COCO ids (see `label_map.py`).
* `dataset_stats.json`: images and instances per class (crowd counted apart).
* `conversion_report.json`: every skipped, converted or fixed record by reason.

Shards are written under temporary names and renamed only when all are complete, so a
reader never sees a half-written dataset; a re-run replaces the shards of the same
prefix, including stale ones from a run with another shard count. Images are read in
a thread pool (image decoding, mask rasterisation and PNG encoding release the GIL,
and threads share `tf.io.gfile` for gs:// paths); the output order is the JSON order.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import io
import itertools
import json
import math
import os
import posixpath
import re
import sys
import uuid
from typing import Any, Callable, Iterable, Iterator

from tfmaskrcnn.data import coco
from tfmaskrcnn.data.categories import CategoryError, CategoryOptions, add_category_arguments, category_options
from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.io import CONVERSION_REPORT_FILENAME as REPORT_FILENAME
from tfmaskrcnn.io import DATASET_STATS_FILENAME as STATS_FILENAME
from tfmaskrcnn.io import LABEL_MAP_FILENAME, join, write_atomic

IMAGES_PER_SHARD = 1000  # default shard size: about 150-250 MB of COCO-like photos


class ConversionError(RuntimeError):
    """The conversion cannot start or finish (bad arguments, conflicting output)."""


@dataclasses.dataclass
class ConversionReport:
    annotations_path: str
    images_dir: str
    output_dir: str
    prefix: str
    strict: bool
    published: bool  # False when --strict refused to publish shards because something was skipped
    shards: list[str]
    num_images_in: int
    num_images_out: int
    num_annotations_in: int
    num_annotations_out: int
    counts: dict[str, int]
    examples: dict[str, list[dict]]
    stats: dict[str, Any]
    categories: dict[str, Any] = dataclasses.field(default_factory=dict)  # `CategoryPlan.report()`
    crowd: str = "keep"

    def counts_of(self, kind: str) -> dict[str, int]:
        return {r: n for r, n in sorted(self.counts.items()) if coco.REASONS[r][0] == kind}

    @property
    def num_skipped(self) -> int:
        """Skipped images plus skipped annotations (conversions and fixes excluded)."""
        return sum(self.counts_of(coco.IMAGE_SKIPPED).values()) + sum(self.counts_of(coco.ANNOTATION_SKIPPED).values())

    def to_json_dict(self) -> dict[str, Any]:
        skipped = {**self.counts_of(coco.IMAGE_SKIPPED), **self.counts_of(coco.ANNOTATION_SKIPPED)}
        return {
            "format": "tfmaskrcnn.conversion_report",
            "version": 1,
            "annotations": self.annotations_path,
            "images": self.images_dir,
            "output": self.output_dir,
            "prefix": self.prefix,
            "strict": self.strict,
            "published": self.published,
            "shards": [posixpath.basename(s) for s in self.shards],
            "totals": {
                "images_in": self.num_images_in,
                "images_out": self.num_images_out,
                "annotations_in": self.num_annotations_in,
                "annotations_out": self.num_annotations_out,
            },
            "skipped": skipped,
            "converted": self.counts_of(coco.CONVERTED),
            "fixed": self.counts_of(coco.FIXED),
            "dropped": self.counts_of(coco.DROPPED),
            "crowd": self.crowd,
            "categories": self.categories,
            "reasons": {
                r: {"kind": coco.REASONS[r][0], "description": coco.REASONS[r][1]} for r in sorted(self.counts)
            },
            "examples": self.examples,
        }

    def format_table(self) -> str:
        rows = [
            (r, kind.replace("_", " "), n)
            for kind in (coco.IMAGE_SKIPPED, coco.ANNOTATION_SKIPPED, coco.DROPPED, coco.CONVERTED, coco.FIXED)
            for r, n in self.counts_of(kind).items()
        ]
        lines = [f"{'reason':<30} {'kind':<20} {'count':>7}"] + [f"{r:<30} {k:<20} {n:>7}" for r, k, n in rows]
        if not rows:
            lines.append("(no image or annotation skipped, converted or fixed)")
        for left_out in self.categories.get("left_out", []):
            lines.append(
                f"category {left_out['id']} {left_out['name']!r} left out of the label map: {left_out['reason']}"
            )
        for rule in self.categories.get("class_map", []):
            lines.append(f"class map {rule['from']!r} -> {rule['to']!r}: {rule['annotations']} annotation(s)")
        for c in self.stats.get("classes", []):
            if c.get("crowd") and not c["instances"]:
                lines.append(
                    f"class {c['name']!r}: all {c['crowd']} of its annotations are crowd (iscrowd=1), which Model "
                    "Garden does not train on, so the model cannot learn it (CVAT writes brush masks as crowd RLE); "
                    "convert with --crowd as-instances"
                )
        lines.append(
            f"images: {self.num_images_in} in, {self.num_images_out} written; annotations: "
            f"{self.num_annotations_in} in, {self.num_annotations_out} written "
            f"({self.stats.get('num_crowd', 0)} crowd)"
        )
        if self.published:
            lines.append(
                f"wrote {len(self.shards)} shard(s), {LABEL_MAP_FILENAME}, {STATS_FILENAME} and "
                f"{REPORT_FILENAME} to {self.output_dir}"
            )
        else:
            lines.append(
                f"--strict: {self.num_skipped} record(s) skipped, shards NOT written; see "
                f"{join(self.output_dir, REPORT_FILENAME)}"
            )
        return "\n".join(lines)


def convert_coco(
    annotations_path: str,
    images_dir: str,
    output_dir: str,
    num_shards: int | None = None,
    prefix: str | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
    categories: CategoryOptions | None = None,
    crowd: str = "keep",
) -> ConversionReport:
    """Converts a COCO instances file; see the module docstring for what is written.

    `num_shards` None means one shard per ~1000 images. With `strict`, nothing but
    the report is written when any image or annotation was skipped
    (`report.published` is False); conversions, fixes and drops the user asked for
    do not count as skips. `categories` and `crowd` as in `coco.parse_coco`.
    """
    data = coco.read_coco_json(annotations_path)
    return convert_coco_dict(
        data,
        images_dir,
        output_dir,
        source=annotations_path,
        num_shards=num_shards,
        prefix=prefix,
        strict=strict,
        workers=workers,
        progress=progress,
        categories=categories,
        crowd=crowd,
    )


def convert_coco_dict(
    data: dict,
    images_dir: str,
    output_dir: str,
    source: str = "<memory>",
    num_shards: int | None = None,
    prefix: str | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
    categories: CategoryOptions | None = None,
    crowd: str = "keep",
) -> ConversionReport:
    """Converts an in-memory COCO instances dict whose `file_name`s are relative to `images_dir`.

    The entry point for importers of other formats (they build the COCO-shaped dict and
    call this, so every format goes through the same checks). `source` names the input
    in messages and reports (a file or folder path); the shard prefix, when not given,
    is derived from it (see `default_prefix`).
    """
    import tensorflow as tf
    from tqdm import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    if workers < 1 or (num_shards is not None and num_shards < 1):
        raise ConversionError("--workers and --num-shards must be at least 1")
    if not tf.io.gfile.isdir(images_dir):
        raise ConversionError(f"image directory {images_dir} does not exist (--images)")
    prefix = prefix or default_prefix(source if source != "<memory>" else images_dir)
    if not _PREFIX.fullmatch(prefix):
        raise ConversionError(f"prefix {prefix!r} must be letters, digits, '.', '_' or '-' (--prefix)")
    dataset = coco.parse_coco(data, source, categories=categories, crowd=crowd)
    num_shards = num_shards or max(1, math.ceil(len(dataset.images) / IMAGES_PER_SHARD))
    tf.io.gfile.makedirs(output_dir)
    _check_label_map_compatible(output_dir, prefix, dataset.label_map, source)

    log = coco.IssueLog()
    log.extend(dataset.issues)
    shards = [join(output_dir, f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)]
    run_tag = uuid.uuid4().hex[:8]
    temporaries = [f"{s}.tmp-{run_tag}" for s in shards]
    writers = [tf.io.TFRecordWriter(t) for t in temporaries]
    counter = _StatsCounter(dataset.label_map)
    try:
        try:
            convert_one = lambda entry: _convert_image(entry, images_dir, dataset.label_map)  # noqa: E731
            with tqdm(total=len(dataset.images), unit="img", desc=f"convert {prefix}", disable=not progress) as bar:
                for serialized, summary, issues in ordered_parallel_map(convert_one, dataset.images, workers):
                    log.extend(issues)
                    if serialized is not None:
                        writers[counter.num_images % num_shards].write(serialized)
                        counter.add(*summary)
                    bar.update(1)
        finally:
            for writer in writers:
                writer.close()
        published = not (strict and _skipped(log) > 0)
        if published:
            for temporary, shard in zip(temporaries, shards):
                tf.io.gfile.rename(temporary, shard, overwrite=True)
            _remove_stale_shards(output_dir, prefix, keep=shards)
    finally:
        # Whatever happened, no temporary shard is left behind.
        for temporary in temporaries:
            if tf.io.gfile.exists(temporary):
                tf.io.gfile.remove(temporary)

    stats = counter.to_json_dict()
    stats["source"] = {
        "annotations": source,
        "images": images_dir,
        "prefix": prefix,
        "shards": [posixpath.basename(s) for s in shards],
    }
    report = ConversionReport(
        annotations_path=source,
        images_dir=images_dir,
        output_dir=output_dir,
        prefix=prefix,
        strict=strict,
        published=published,
        shards=shards if published else [],
        num_images_in=dataset.num_images_in,
        num_images_out=counter.num_images,
        num_annotations_in=dataset.num_annotations_in,
        num_annotations_out=counter.num_annotations,
        counts=dict(log.counts),
        examples={r: [dataclasses.asdict(i) for i in issues] for r, issues in sorted(log.examples.items())},
        stats=stats,
        categories=dataset.plan.report() if dataset.plan else {},
        crowd=crowd,
    )
    if published:
        dataset.label_map.save(join(output_dir, LABEL_MAP_FILENAME))
        write_atomic(join(output_dir, STATS_FILENAME), json.dumps(stats, indent=2) + "\n")
    write_atomic(join(output_dir, REPORT_FILENAME), json.dumps(report.to_json_dict(), indent=2) + "\n")
    return report


def ordered_parallel_map(fn: Callable, items: Iterable, workers: int, window: int | None = None) -> Iterator:
    """`map(fn, items)` on a thread pool, in input order, with at most `window` items in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    window = window or 4 * workers
    iterator = iter(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque(pool.submit(fn, item) for item in itertools.islice(iterator, window))
        try:
            while pending:
                result = pending.popleft().result()
                for item in itertools.islice(iterator, 1):
                    pending.append(pool.submit(fn, item))
                yield result
        finally:
            for future in pending:  # stop queued work when the consumer fails or stops early
                future.cancel()


def build_example(record: coco.ImageRecord, label_map: LabelMap) -> bytes:
    """A serialized tf.train.Example for Model Garden's TfExampleDecoder(include_mask=True)."""
    import tensorflow as tf

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    instances = record.instances
    width, height = float(record.width), float(record.height)
    features = {
        "image/encoded": strings([record.encoded]),
        "image/format": strings([record.image_format.encode()]),
        "image/source_id": strings([str(record.image_id).encode()]),
        "image/filename": strings([record.file_name.encode()]),
        "image/height": ints([record.height]),
        "image/width": ints([record.width]),
        "image/object/bbox/xmin": floats(i.box[0] / width for i in instances),
        "image/object/bbox/ymin": floats(i.box[1] / height for i in instances),
        "image/object/bbox/xmax": floats(i.box[2] / width for i in instances),
        "image/object/bbox/ymax": floats(i.box[3] / height for i in instances),
        "image/object/class/label": ints(i.class_id for i in instances),
        "image/object/class/text": strings(label_map.name(i.class_id).encode() for i in instances),
        "image/object/is_crowd": ints(int(i.is_crowd) for i in instances),
        "image/object/area": floats(i.area for i in instances),
        "image/object/annotation_id": ints(i.annotation_id for i in instances),
        "image/object/mask": strings(encode_mask_png(i.mask) for i in instances),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def encode_mask_png(mask) -> bytes:
    """Single-channel uint8 PNG with values 0/1 (what the decoder expects; 0/255 would train garbage)."""
    from PIL import Image

    buffer = io.BytesIO()
    # zlib level 6 makes COCO masks ~2.4x smaller than level 1 for ~1 ms more per mask.
    Image.fromarray(mask.astype("uint8", copy=False)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _convert_image(entry: coco.ImageEntry, images_dir: str, label_map: LabelMap):
    record, issues = coco.load_image_record(entry, images_dir, label_map)
    if record is None:
        return None, None, issues
    summary = (record.image_id, [(i.class_id, i.is_crowd) for i in record.instances])
    return build_example(record, label_map), summary, issues


class _StatsCounter:
    """Images and instances per class of what was written; crowd regions counted apart."""

    def __init__(self, label_map: LabelMap) -> None:
        self.label_map = label_map
        self.num_images = 0
        self.num_annotations = 0
        self.num_crowd = 0
        self.images_without_instances = 0
        self.instances: collections.Counter[int] = collections.Counter()
        self.crowd: collections.Counter[int] = collections.Counter()
        self.images: collections.Counter[int] = collections.Counter()

    def add(self, image_id: int, objects: list[tuple[int, bool]]) -> None:
        self.num_images += 1
        self.num_annotations += len(objects)
        classes = [c for c, crowd in objects if not crowd]
        self.num_crowd += len(objects) - len(classes)
        self.crowd.update(c for c, crowd in objects if crowd)
        self.instances.update(classes)
        self.images.update(set(classes))
        self.images_without_instances += not classes

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "num_instances": sum(self.instances.values()),
            "num_crowd": self.num_crowd,
            "images_without_instances": self.images_without_instances,
            "classes": [
                {
                    "id": c,
                    "name": self.label_map.name(c),
                    "coco_id": self.label_map.to_coco_id(c),
                    "instances": self.instances[c],
                    "crowd": self.crowd[c],  # written as crowd: not trained on
                    "images": self.images[c],
                }
                for c in range(1, self.label_map.num_classes + 1)
            ],
        }


def _check_label_map_compatible(output_dir: str, prefix: str, label_map: LabelMap, annotations_path: str) -> None:
    """Refuses to replace a different label map that shards of another prefix were written with."""
    import tensorflow as tf

    existing_path = join(output_dir, LABEL_MAP_FILENAME)
    if not tf.io.gfile.exists(existing_path):
        return
    try:
        if LabelMap.load(existing_path) == label_map:
            return
    except ValueError:
        pass  # an unreadable label map is replaced like a different one
    own = _shard_name_pattern(prefix)
    others = sorted(n for n in tf.io.gfile.listdir(output_dir) if ".tfrecord" in n and not own.fullmatch(n))
    if others:
        raise ConversionError(
            f"{existing_path} lists other classes than {annotations_path}, and {', '.join(others[:3])}"
            f"{' ...' if len(others) > 3 else ''} in {output_dir} were written with it; convert into another "
            "--output directory (one per split), or delete the old files"
        )


def _remove_stale_shards(output_dir: str, prefix: str, keep: list[str]) -> None:
    import tensorflow as tf

    pattern = _shard_name_pattern(prefix)
    keep_names = {posixpath.basename(k) if "://" in k else os.path.basename(k) for k in keep}
    for name in tf.io.gfile.listdir(output_dir):
        if pattern.fullmatch(name) and name not in keep_names:
            tf.io.gfile.remove(join(output_dir, name))


def _shard_name_pattern(prefix: str) -> re.Pattern:
    """Shard file names of `prefix` for any shard count, and their temporaries."""
    return re.compile(rf"{re.escape(prefix)}-\d{{5}}-of-\d{{5}}\.tfrecord(\.tmp-[0-9a-f]{{8}})?")


def _skipped(log: coco.IssueLog) -> int:
    return log.count(coco.IMAGE_SKIPPED) + log.count(coco.ANNOTATION_SKIPPED)


_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def default_prefix(source: str) -> str:
    """The shard prefix of an input: its file name stem when that is a valid prefix
    (`instances_train2017.json` -> `instances_train2017`), else its folder's name
    (Roboflow's `train/_annotations.coco.json` -> `train`), sanitized; `data` at worst."""
    path = source.rstrip("/")
    base, parent = posixpath.basename(path), posixpath.basename(posixpath.dirname(path))
    if "://" not in path:
        base, parent = os.path.basename(path), os.path.basename(os.path.dirname(os.path.abspath(path)))
    stem = base[:-5] if base.lower().endswith(".json") else base
    if _PREFIX.fullmatch(stem):
        return stem
    for candidate in (parent, stem):
        sanitized = re.sub(r"[^A-Za-z0-9._-]+", "_", candidate).lstrip("._-")
        if sanitized:
            return sanitized
    return "data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="COCO instances JSON (local or gs://)")
    parser.add_argument("--images", help="directory the JSON file_name entries are relative to (COCO)")
    parser.add_argument("--output", required=True, help="output directory (one per split)")
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help=f"number of TFRecord shards (default: one per {IMAGES_PER_SHARD} images)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="shard file prefix (default: the JSON file name stem, or its folder's name when the stem is not a "
        "valid prefix, as for Roboflow's train/_annotations.coco.json -> train)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 and write no shards if any image or annotation is skipped"
    )
    parser.add_argument("--workers", type=int, default=None, help="reader threads (default: min(8, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_category_arguments(parser)
    from tfmaskrcnn.data.formats import command as formats_command  # --format: Labelme, CVAT, YOLO, VOC exports

    formats_command.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from tfmaskrcnn.data.formats import command as formats_command

    status = formats_command.prepare_convert(args)  # imports a non-COCO export, points args at its COCO form
    if status is not None:
        return status
    try:
        report = convert_coco(
            args.annotations,
            args.images,
            args.output,
            num_shards=args.num_shards,
            prefix=args.prefix,
            strict=args.strict,
            workers=args.workers,
            progress=not args.no_progress,
            categories=category_options(args),
            crowd=args.crowd,
        )
    except (ConversionError, coco.CocoFormatError, CategoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.format_table())
    return 1 if args.strict and report.num_skipped else 0
