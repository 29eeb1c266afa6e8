"""Class statistics from dataset_stats.json and from TFRecords, and the `stats` command."""

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfmaskrcnn import losses
from tfmaskrcnn.cli import stats as stats_command
from tfmaskrcnn.data import stats
from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.dataloaders import sampling

NAMES = ["square", "circle", "triangle"]
# Per image: (labels, is_crowd). The crowd circle in image 3 must not count.
IMAGES = [
    ([1, 1], [0, 0]),
    ([1, 2], [0, 0]),
    ([1], []),
    ([1, 2, 3], [0, 1, 0]),
    ([], []),
    ([1, 1, 1], [0, 0, 0]),
]
# Non-crowd: square 8 instances in 5 images, circle 1 in 1, triangle 1 in 1; 6 images.


def _example(labels, crowd):
    feature = {
        "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
        "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"1"])),
    }
    if crowd:
        feature["image/object/is_crowd"] = tf.train.Feature(int64_list=tf.train.Int64List(value=crowd))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_converter_output(directory, images=IMAGES, with_json=True):
    """Shards, label map and dataset_stats.json named and laid out as `tfmaskrcnn convert` writes them."""
    shards = [f"train-{shard:05d}-of-00002.tfrecord" for shard in range(2)]
    for name, part in zip(shards, [images[:3], images[3:]]):
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for labels, crowd in part:
                writer.write(_example(labels, crowd))
    LabelMap(names=NAMES, coco_ids=[10, 11, 12]).save(str(directory / "label_map.json"))
    if with_json:
        counted = [
            {"id": i + 1, "name": name, "coco_id": 10 + i, "instances": n, "images": m}
            for i, (name, n, m) in enumerate(zip(NAMES, [8, 1, 1], [5, 1, 1]))
        ]
        (directory / "dataset_stats.json").write_text(
            json.dumps(
                {
                    "num_images": 6,
                    "num_instances": 10,
                    "num_crowd": 1,
                    "classes": counted,
                    "source": {"prefix": "train", "shards": shards},
                }
            )
        )
    return directory


def test_json_and_tfrecords_agree(tmp_path):
    _write_converter_output(tmp_path)
    from_json = stats.load_class_stats(str(tmp_path), source="json")
    from_records = stats.load_class_stats(str(tmp_path), source="tfrecord", show_progress=False)
    assert from_json.differences(from_records) == []
    assert from_records.names == NAMES
    np.testing.assert_array_equal(from_records.instance_counts, [8, 1, 1])
    np.testing.assert_array_equal(from_records.image_counts, [5, 1, 1])
    assert from_records.num_images == 6
    assert from_records.image_classes == [(1,), (1, 2), (1,), (1, 3), (), (1,)]
    assert from_json.image_classes is None


def test_differences_are_reported(tmp_path):
    _write_converter_output(tmp_path)
    from_json = stats.load_class_stats(str(tmp_path), source="json")
    from_json.instance_counts[1] = 2
    differences = from_json.differences(stats.load_class_stats(str(tmp_path), show_progress=False))
    assert differences == ["instances per class [8, 2, 1] vs [8, 1, 1]"]


def test_glob_without_label_map_names_classes_by_id(tmp_path):
    _write_converter_output(tmp_path)
    (tmp_path / "label_map.json").unlink()
    result = stats.load_class_stats(str(tmp_path / "train-0000*.tfrecord"), show_progress=False)
    assert result.names == ["class_1", "class_2", "class_3"]


def test_label_zero_names_the_file_and_record(tmp_path):
    _write_converter_output(tmp_path, images=[([1], []), ([2], []), ([0, 1], [])], with_json=False)
    message = r"train-00000-of-00002.tfrecord: record 2 has class label 0; labels must be 1..3"
    with pytest.raises(ValueError, match=message):
        stats.load_class_stats(str(tmp_path), show_progress=False)


def test_label_above_the_label_map_is_refused(tmp_path):
    _write_converter_output(tmp_path, images=[([1], []), ([4], [])], with_json=False)
    with pytest.raises(ValueError, match="record 1 has class label 4; labels must be 1..3"):
        stats.load_class_stats(str(tmp_path), show_progress=False)


def test_broken_stats_json_says_how_to_fix(tmp_path):
    (tmp_path / "dataset_stats.json").write_text(
        json.dumps({"num_images": 1, "classes": [{"id": 2, "name": "a", "instances": 1, "images": 1}]})
    )
    with pytest.raises(ValueError, match=r"classes\[0\] .* ids must be 1..K in order"):
        stats.load_class_stats(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TFRecord shards and no dataset_stats.json"):
        stats.load_class_stats(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        stats.load_class_stats(str(tmp_path / "*.tfrecord"))


def _args(data, **overrides):
    parser = argparse.ArgumentParser()
    stats_command.add_arguments(parser)
    argv = [str(data)]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_yaml_snippet_holds_the_weights_and_threshold(tmp_path, capsys):
    _write_converter_output(tmp_path)
    assert stats_command.main(_args(tmp_path, format="yaml", scheme="inverse", background_weight=0.5)) == 0
    snippet = yaml.safe_load(capsys.readouterr().out)
    weighting = snippet["task"]["class_balance"]["weighting"]
    expected = losses.compute_class_weights([8, 1, 1], "inverse", background_weight=0.5)
    np.testing.assert_allclose(weighting["weights"], expected, rtol=1e-5)
    assert weighting["scheme"] == "explicit"
    sampling_config = snippet["task"]["train_data"]["sampling"]
    assert sampling_config["type"] == "repeat_factor"
    assert sampling_config["threshold"] == pytest.approx(5 / 6 / 2, rel=1e-5)


def test_json_report_has_repeat_factors_and_expected_frequencies(tmp_path, capsys):
    _write_converter_output(tmp_path)
    assert stats_command.main(_args(tmp_path, format="json", threshold=0.5)) == 0
    report = json.loads(capsys.readouterr().out)
    frequency = np.array([5, 1, 1]) / 6
    repeat = sampling.repeat_factors(frequency, 0.5)
    after = sampling.expected_image_frequency_after([(1,), (1, 2), (1,), (1, 3), (), (1,)], repeat)
    assert [c["repeat_factor"] for c in report["classes"]] == pytest.approx(repeat.tolist())
    assert [c["image_frequency_after_sampling"] for c in report["classes"]] == pytest.approx(after.tolist())
    assert report["threshold_rule"] == "given"


def test_table_lists_every_class(tmp_path, capsys):
    _write_converter_output(tmp_path)
    assert stats_command.main(_args(tmp_path, source="json")) == 0
    table = capsys.readouterr().out
    for name in NAMES:
        assert name in table
    assert "imbalance (most / fewest instances): 8.0" in table
    assert "freq_after needs each image's classes" in table


def test_command_warns_when_json_and_records_disagree(tmp_path, capsys):
    _write_converter_output(tmp_path)
    data = json.loads((tmp_path / "dataset_stats.json").read_text())
    data["num_images"] = 7
    (tmp_path / "dataset_stats.json").write_text(json.dumps(data))
    assert stats_command.main(_args(tmp_path)) == 0
    assert "disagrees with the TFRecords: num_images 7 vs 6" in capsys.readouterr().err


def test_output_file_is_written_whole(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = _write_converter_output(tmp_path / "data")
    target = tmp_path / "balance.json"
    assert stats_command.main(_args(data, format="json", output=target)) == 0
    assert json.loads(target.read_text())["num_images"] == 6
    assert capsys.readouterr().out == ""
    # Nothing but the report beside the data: no temporary left behind by the atomic write.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["balance.json", "data"]


def test_truncated_shard_is_named(tmp_path):
    _write_converter_output(tmp_path, with_json=False)
    shard = tmp_path / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-7])
    message = r"train-00001-of-00002.tfrecord: unreadable after \d+ records \(truncated record"
    with pytest.raises(ValueError, match=message):
        stats.load_class_stats(str(tmp_path), show_progress=False)


def test_directory_reads_the_shards_its_stats_describe(tmp_path):
    _write_converter_output(tmp_path)
    # A stray shard of another prefix and a converter temporary must not be counted.
    with tf.io.TFRecordWriter(str(tmp_path / "other-00000-of-00001.tfrecord")) as writer:
        writer.write(_example([2, 2], []))
    (tmp_path / "train-00000-of-00002.tfrecord.tmp-0123abcd").write_bytes(b"partial")
    assert len(stats.find_tfrecords(str(tmp_path))) == 2
    np.testing.assert_array_equal(stats.load_class_stats(str(tmp_path), show_progress=False).instance_counts, [8, 1, 1])
    # Without dataset_stats.json every shard of the directory is read, temporaries excluded.
    (tmp_path / "dataset_stats.json").unlink()
    assert len(stats.find_tfrecords(str(tmp_path))) == 3
