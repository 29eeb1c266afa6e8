"""`tfmaskrcnn split`: records split by image into parts, stratified by class, each a record set of its own."""

from __future__ import annotations

import collections
import json
import os
import re

import numpy as np
import pytest

from tfmaskrcnn.data import split


def test_parts_are_parsed_and_checked():
    assert split.parse_parts("calib=0.5,test=0.5") == {"calib": 0.5, "test": 0.5}
    assert split.parse_parts("train=0.8, val=0.1, calib=0.1") == {"train": 0.8, "val": 0.1, "calib": 0.1}
    for bad, message in [
        ("calib=0.5", "at least two parts"),
        ("a=0.5,b=0.4", "add up to 0.9"),
        ("a=0.5,a=0.5", "distinct NAME=FRACTION"),
        ("a=1,b=0", "fractions in (0, 1)"),
        ("../x=0.5,b=0.5", "names of letters"),
    ]:
        with pytest.raises(split.SplitError, match=re.escape(message)):
            split.parse_parts(bad)


def test_every_class_lands_in_every_part_where_it_can():
    rng = np.random.default_rng(0)
    # 200 images: class 1 common, class 2 in 20 images, class 3 in 3, class 4 in 1, 30 images without objects.
    images = [{1} for _ in range(150)] + [{1, 2} for _ in range(10)] + [{2} for _ in range(10)]
    images += [{3}, {1, 3}, {2, 3}, {4}] + [set() for _ in range(26)]
    images = [images[i] for i in rng.permutation(len(images))]
    part = split.assign_parts(images, [0.9, 0.1], seed=3)
    assert np.array_equal(part, split.assign_parts(images, [0.9, 0.1], seed=3))  # reproducible
    assert not np.array_equal(part, split.assign_parts(images, [0.9, 0.1], seed=4))
    assert abs((part == 1).sum() - 20) <= 3  # about 10% of the images
    for c, total in [(1, 161), (2, 21), (3, 3)]:
        having = np.array([c in s for s in images])
        in_small = int((having & (part == 1)).sum())
        assert 1 <= in_small, c  # even the class of 3 images is in the 10% part
        assert abs(in_small - 0.1 * total) <= 2, (c, in_small)
    assert sum(4 in images[i] for i in np.flatnonzero(part >= 0)) == 1  # one image: one part only
    empty = np.array([not s for s in images])
    assert 1 <= (empty & (part == 1)).sum() <= 5  # negatives are shared by the parts' shares too


def _records_by_id(pattern):
    import tensorflow as tf

    from tfmaskrcnn.data.records import tfrecord_files

    out = {}
    for path in tfrecord_files(pattern):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            out[example.features.feature["image/source_id"].bytes_list.value[0].decode()] = record.numpy()
    return out


def test_split_command_writes_record_sets_with_their_reports(shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli
    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.data.stats import load_class_stats

    out = tmp_path / "parts"
    assert cli.main(["split", "--data", shapes_records["train"], "--output", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "calib" in printed and "test" in printed and "split_report.json" in printed

    source = _records_by_id(shapes_records["train"])
    calib, test = _records_by_id(str(out / "calib" / "*.tfrecord")), _records_by_id(str(out / "test" / "*.tfrecord"))
    assert not set(calib) & set(test)  # by image: no image in both
    assert {**calib, **test} == source  # every record, byte for byte
    assert abs(len(calib) - 12) <= 2  # half the images, give or take what the class balance needs

    labels = LabelMap.load(os.path.join(os.path.dirname(shapes_records["train"]), "label_map.json"))
    report = json.loads((out / "split_report.json").read_text())
    assert report["seed"] == 1 and report["missing"] == {}
    for name, records in (("calib", calib), ("test", test)):
        assert LabelMap.load(str(out / name / "label_map.json")) == labels
        stats = load_class_stats(str(out / name), source="json")  # the file calibrate's class counts come from
        counted = load_class_stats(str(out / name / "*.tfrecord"), source="tfrecord", show_progress=False)
        assert list(stats.instance_counts) == list(counted.instance_counts)
        assert all(count > 0 for count in counted.image_counts), name  # every class in each part
        assert report["parts"][name]["num_images"] == len(records)
        assert [report["parts"][name]["classes"][n]["instances"] for n in labels.names] == list(stats.instance_counts)

    # Again with the same seed: the same parts.
    assert (
        cli.main(["split", "--data", shapes_records["train"], "--output", str(tmp_path / "again"), "--seed", "1"]) == 0
    )
    assert set(_records_by_id(str(tmp_path / "again" / "calib" / "*.tfrecord"))) == set(calib)


def test_split_errors_name_the_fix(shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli

    train = shapes_records["train"]
    assert cli.main(["split", "--data", train, "--output", str(tmp_path / "x"), "--parts", "a=0.99,b=0.01"]) == 2
    assert "would get less than one" in capsys.readouterr().err
    assert cli.main(["split", "--data", str(tmp_path / "none*.tfrecord"), "--output", str(tmp_path / "y")]) == 2
    assert "error" in capsys.readouterr().err
    assert cli.main(["split", "--data", train, "--output", os.path.dirname(train)]) == 2
    assert "is the folder of --data" in capsys.readouterr().err
    counts = collections.Counter(p.name for p in tmp_path.iterdir())
    assert "x" not in counts or not list((tmp_path / "x").glob("*/*.tfrecord"))
