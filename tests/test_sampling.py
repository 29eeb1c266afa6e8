"""Repeat-factor and class-aware sampling: the LVIS formula and the real tf.data sample_fn."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfmaskrcnn.dataloaders import sampling

# Hand-made dataset, 3 classes, 10 images.
IMAGES = [(1,), (1,), (1,), (1,), (1, 2), (1,), (1,), (1, 3), (2,), ()]


def test_class_image_frequency_counts_images_not_instances():
    frequency = sampling.class_image_frequency([(1, 1, 1), (1, 2), ()], num_classes=3)
    np.testing.assert_allclose(frequency, [2 / 3, 1 / 3, 0.0])
    with pytest.raises(ValueError, match="class id 0 is outside 1..3"):
        sampling.class_image_frequency([(0,)], num_classes=3)


def test_repeat_factors_follow_the_lvis_formula():
    frequency = sampling.class_image_frequency(IMAGES, 3)
    np.testing.assert_allclose(frequency, [0.8, 0.2, 0.1])
    # r(c) = max(1, sqrt(t / f(c))) with t = 0.4: 1, sqrt(2), 2
    np.testing.assert_allclose(sampling.repeat_factors(frequency, 0.4), [1.0, np.sqrt(2.0), 2.0])
    # LVIS's own threshold boosts nothing here.
    np.testing.assert_allclose(sampling.repeat_factors(frequency, 0.001), [1.0, 1.0, 1.0])
    # An absent class never applies; its factor is 1 rather than infinite.
    np.testing.assert_allclose(sampling.repeat_factors([0.5, 0.0], 0.5), [1.0, 1.0])


def test_image_repeat_factor_is_the_max_over_its_classes():
    class_repeat = np.array([1.0, np.sqrt(2.0), 2.0])
    assert sampling.image_repeat_factor((1,), class_repeat) == 1.0
    assert sampling.image_repeat_factor((1, 2), class_repeat) == pytest.approx(np.sqrt(2.0))
    assert sampling.image_repeat_factor((2, 3, 1), class_repeat) == 2.0
    assert sampling.image_repeat_factor((), class_repeat) == 1.0


def test_expected_frequency_after_by_hand():
    class_repeat = np.array([1.0, np.sqrt(2.0), 2.0])
    # r(I): 1 x6 (only class 1 or empty... 7 images), sqrt2 for (1,2) and (2,), 2 for (1,3)
    total = 7 * 1.0 + 2 * np.sqrt(2.0) + 2.0
    expected = [(6 + np.sqrt(2.0) + 2.0) / total, 2 * np.sqrt(2.0) / total, 2.0 / total]
    np.testing.assert_allclose(sampling.expected_image_frequency_after(IMAGES, class_repeat), expected)


def _skewed_dataset(fractions, num_images=400, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tuple(int(c) + 1 for c in rng.choice(len(fractions), size=rng.integers(1, 5), p=fractions))
        for _ in range(num_images)
    ]


def test_choose_threshold_boosts_a_skewed_split_and_leaves_a_balanced_one():
    skewed = sampling.class_image_frequency(_skewed_dataset([0.9, 0.07, 0.03]), 3)
    threshold = sampling.choose_threshold(skewed)
    assert threshold == pytest.approx(skewed.max() / 2)
    factors = sampling.repeat_factors(skewed, threshold)
    assert factors[0] == 1.0 and factors[1] > 1.5 and factors[2] > 2.0

    balanced = sampling.class_image_frequency(_skewed_dataset([1 / 3] * 3), 3)
    np.testing.assert_array_equal(sampling.repeat_factors(balanced, sampling.choose_threshold(balanced)), [1, 1, 1])
    with pytest.raises(ValueError, match="no class appears"):
        sampling.choose_threshold([0.0, 0.0])


# An LVIS-like table: 100k images, image counts of 1203 classes from 50k down to 1 image
# (frequencies 0.5 .. 1e-5, log-uniform, as LVIS v1's rare/common/frequent spread).
LVIS_LIKE = np.geomspace(0.5, 1e-5, 1203)


def test_choose_threshold_on_an_lvis_like_table_is_lvis_own():
    """f_max / 2 would repeat the 1-in-100k class sqrt(0.25 / 1e-5) = 158x; the rule lowers t until the
    rarest class repeats 10x, which is LVIS's t = 0.001 (detectron2's REPEAT_THRESHOLD for LVIS)."""
    threshold = sampling.choose_threshold(LVIS_LIKE)
    assert threshold == pytest.approx(0.001)
    factors = sampling.repeat_factors(LVIS_LIKE, threshold, max_repeat=10.0)
    # By hand: f = 1e-5 -> sqrt(100) = 10; f = 1e-4 -> sqrt(10); every class with f >= 0.001 -> 1.
    expected = np.maximum(1.0, np.sqrt(0.001 / LVIS_LIKE))
    np.testing.assert_allclose(factors, expected)
    assert factors[-1] == pytest.approx(10.0) and factors[0] == 1.0
    assert np.all(factors[LVIS_LIKE >= 0.001] == 1.0)
    np.testing.assert_allclose(sampling.repeat_factors(np.array([1e-4, 1e-5]), 0.001), [np.sqrt(10.0), 10.0])
    rule = sampling.choose_threshold_rule(LVIS_LIKE)
    assert "lowered from f_max / 2 = 0.25" in rule and "158x" in rule and "repeats 10x" in rule, rule
    # On a small skewed set f_max / 2 stands and the rule says so.
    small = np.array([0.975, 0.145, 0.073])
    assert sampling.choose_threshold(small) == pytest.approx(0.4875)
    assert sampling.choose_threshold_rule(small) == "f_max / 2 = 0.975 / 2"


def test_the_cap_bounds_any_threshold_and_the_inverse_variant():
    # An explicit t = 0.25 on the LVIS-like table: 158x uncapped, 10x with LVIS's largest factor as cap.
    assert sampling.repeat_factors(LVIS_LIKE, 0.25).max() == pytest.approx(np.sqrt(0.25 / 1e-5))
    assert sampling.repeat_factors(LVIS_LIKE, 0.25, max_repeat=10.0).max() == 10.0
    # detectron2's REPEAT_SQRT=False: r = max(1, t / f), by hand on IMAGES' f = 0.8, 0.2, 0.1.
    frequency = sampling.class_image_frequency(IMAGES, 3)
    np.testing.assert_allclose(sampling.repeat_factors(frequency, 0.4, sqrt=False), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(sampling.repeat_factors(frequency, 0.4, sqrt=False, max_repeat=3.0), [1.0, 2.0, 3.0])
    # Its chosen t gives the rarest class exactly the cap too: 1e-5 * 10 = 1e-4.
    assert sampling.choose_threshold(LVIS_LIKE, sqrt=False) == pytest.approx(1e-4)
    assert sampling.repeat_factors(LVIS_LIKE, 1e-4, sqrt=False)[-1] == pytest.approx(10.0)
    # Without a cap the data rule is f_max / 2 whatever the tail.
    assert sampling.choose_threshold(LVIS_LIKE, max_repeat=None) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="largest repeat factor must be >= 1"):
        sampling.repeat_factors(frequency, 0.4, max_repeat=0.5)


def _in_memory_dataset(images):
    """Decoded-dict stream like Model Garden's decoder output, from memory."""
    # Every image also carries a crowd instance of class 3, which must not count.
    classes = tf.ragged.constant([list(c) + [3] for c in images], dtype=tf.int64, ragged_rank=1)
    crowd = tf.ragged.constant([[False] * len(c) + [True] for c in images], dtype=tf.bool, ragged_rank=1)
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "image_id": tf.range(len(images), dtype=tf.int64),
            "groundtruth_classes": classes,
            "groundtruth_is_crowd": crowd,
        }
    )

    def densify(element):  # rows of a ragged tensor arrive as ragged specs; the decoder gives dense tensors
        return {
            key: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value for key, value in element.items()
        }

    return dataset.map(densify)


def _image_ids(dataset):
    """The `image_id`s of a finite stream, read in batches (per-element reads are slow)."""
    batches = dataset.map(lambda element: element["image_id"]).batch(1024).as_numpy_iterator()
    return [int(i) for batch in batches for i in batch]


def test_sample_fn_reaches_the_expected_frequencies_over_20_epochs():
    images = _skewed_dataset([0.9, 0.07, 0.03])
    frequency = sampling.class_image_frequency(images, 3)
    class_repeat = sampling.repeat_factors(frequency, sampling.choose_threshold(frequency))
    expected = sampling.expected_image_frequency_after(images, class_repeat)
    epochs = 20
    expected_length = int(epochs * sum(sampling.image_repeat_factor(c, class_repeat) for c in images))

    # As in Model Garden's InputReader for training: the decoded stream repeats, then sample_fn.
    sample_fn = sampling.make_repeat_factor_sample_fn(class_repeat, seed=1)
    dataset = sample_fn(_in_memory_dataset(images).repeat()).take(expected_length)
    sampled_ids = _image_ids(dataset)

    observed = sampling.class_image_frequency([images[i] for i in sampled_ids], 3)
    np.testing.assert_allclose(observed, expected, rtol=0.05)
    assert observed[2] > 1.8 * frequency[2]  # the rarest class really is seen more often
    # Every image still shows up in about `epochs` passes' worth of copies.
    counts = collections.Counter(sampled_ids)
    assert len(counts) == len(images)


def test_copies_are_redrawn_on_every_pass():
    # One image with r = 2.5, seen in 400 passes; no shuffle so each pass's copies stay together.
    passes = tf.data.Dataset.range(400).map(
        lambda i: {"image_id": i, "groundtruth_classes": tf.constant([2], tf.int64)}
    )
    sample_fn = sampling.make_repeat_factor_sample_fn(np.array([1.0, 2.5]), seed=3, shuffle_buffer=1)
    copies = collections.Counter(_image_ids(sample_fn(passes)))
    per_pass = np.array([copies[i] for i in range(400)])
    assert set(per_pass) == {2, 3}
    assert per_pass.mean() == pytest.approx(2.5, abs=0.1)


def test_shuffle_separates_copies():
    images = [(2,)] * 50 + [(1,)] * 50

    def adjacent_duplicates(buffer):
        fn = sampling.make_repeat_factor_sample_fn(np.array([1.0, 4.0]), seed=5, shuffle_buffer=buffer)
        ids = _image_ids(fn(_in_memory_dataset(images)))
        assert len(ids) == 50 * 4 + 50
        return sum(a == b for a, b in zip(ids, ids[1:])) / len(ids)

    assert adjacent_duplicates(1) > 0.5
    assert adjacent_duplicates(64) < 0.1


def test_same_seed_gives_the_same_stream():
    images = _skewed_dataset([0.9, 0.07, 0.03], num_images=50)
    fn = sampling.make_repeat_factor_sample_fn(np.array([1.0, 2.2, 3.7]), seed=7)

    def ids():
        return _image_ids(fn(_in_memory_dataset(images)))

    assert ids() == ids()


def test_sample_fn_refuses_ids_outside_the_repeat_table():
    fn = sampling.make_repeat_factor_sample_fn(np.array([1.0, 2.0]), seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="another label map"):
        list(fn(_in_memory_dataset([(5,)])).as_numpy_iterator())
    with pytest.raises(ValueError, match="factors >= 1"):
        sampling.make_repeat_factor_sample_fn(np.array([0.5]))


def test_class_aware_sampling_draws_classes_uniformly():
    images = _skewed_dataset([0.9, 0.07, 0.03], num_images=200)
    fn = sampling.make_class_aware_sample_fn(3, seed=11)
    ids = _image_ids(fn(_in_memory_dataset(images).repeat()).take(1500))
    frequency = sampling.class_image_frequency([images[i] for i in ids], 3)
    # Each class is picked a third of the time; images picked for one class may contain others too.
    assert frequency[2] > 1 / 3 - 0.05 and frequency[1] > 1 / 3 - 0.05
    with pytest.raises(ValueError, match="class id 4 is outside 1..3"):
        sampling.make_class_aware_sample_fn(3, class_ids=[4])


def _example(index, classes, crowd=None):
    """A serialized tf.Example as the converter writes it (2x2 image, one box per instance)."""
    pixel = tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8)).numpy()
    crowd = [0] * len(classes) if crowd is None else list(crowd)

    def floats(value, n=len(classes)):  # noqa: B008  (binds this image's count)
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value] * n))

    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixel])),
        "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(index).encode()])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
        "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=list(classes))),
        "image/object/is_crowd": tf.train.Feature(int64_list=tf.train.Int64List(value=crowd)),
        "image/object/bbox/xmin": floats(0.0),
        "image/object/bbox/ymin": floats(0.0),
        "image/object/bbox/xmax": floats(1.0),
        "image/object/bbox/ymax": floats(1.0),
        "image/object/area": floats(4.0),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_records(path, images):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index, classes in enumerate(images):
            writer.write(_example(index, classes))
    return str(path)


def _record_ids(dataset):
    """`image/source_id`s of a finite stream of serialized records."""
    ids = dataset.map(
        lambda record: tf.strings.to_number(
            tf.io.parse_single_example(record, {"image/source_id": tf.io.FixedLenFeature([], tf.string)})[
                "image/source_id"
            ],
            tf.int64,
        )
    )
    return [int(i) for batch in ids.batch(1024).as_numpy_iterator() for i in batch]


def _in_memory_records(images):
    """The serialized twin of `_in_memory_dataset`: same classes, a crowd instance of class 3 each."""
    return tf.data.Dataset.from_tensor_slices(
        [_example(i, list(c) + [3], [0] * len(c) + [1]) for i, c in enumerate(images)]
    )


def test_record_classes_parse_labels_without_crowd():
    classes = sampling.record_classes(tf.constant(_example(0, [2, 1, 3], [0, 0, 1])))
    assert classes.numpy().tolist() == [2, 1]
    # No is_crowd feature: every instance counts (as Model Garden's decoder).
    bare = tf.train.Example()
    bare.features.feature["image/object/class/label"].int64_list.value.extend([3, 3])
    assert sampling.record_classes(tf.constant(bare.SerializeToString())).numpy().tolist() == [3, 3]
    assert sampling.record_classes(tf.constant(_example(0, []))).numpy().tolist() == []


def test_record_sampler_draws_exactly_what_the_decoded_sampler_draws():
    # Same seed, same images: the serialized stream gives the same image ids in the same order,
    # so the statistics of the tests above carry over to the record path training uses.
    images = _skewed_dataset([0.9, 0.07, 0.03], num_images=120, seed=3)
    class_repeat = np.array([1.0, 2.2, 3.7])
    decoded = sampling.make_repeat_factor_sample_fn(class_repeat, seed=9, shuffle_buffer=16)
    records = sampling.make_repeat_factor_sample_fn(class_repeat, seed=9, shuffle_buffer=16, on="records")
    for _ in range(2):  # and again: the draws are per pass, not cached
        assert _record_ids(records(_in_memory_records(images))) == _image_ids(decoded(_in_memory_dataset(images)))
    aware_decoded = sampling.make_class_aware_sample_fn(3, seed=2)
    aware_records = sampling.make_class_aware_sample_fn(3, seed=2, on="records")
    assert _record_ids(aware_records(_in_memory_records(images).repeat()).take(300)) == _image_ids(
        aware_decoded(_in_memory_dataset(images).repeat()).take(300)
    )
    with pytest.raises(ValueError, match="'records'"):
        sampling.make_repeat_factor_sample_fn(class_repeat, on="images")


def test_record_sampler_refuses_ids_outside_the_repeat_table():
    fn = sampling.make_repeat_factor_sample_fn(np.array([1.0, 2.0]), seed=0, on="records")
    with pytest.raises(tf.errors.InvalidArgumentError, match="another label map"):
        list(fn(tf.data.Dataset.from_tensors(_example(0, [5]))).as_numpy_iterator())


def test_shard_class_ids(tmp_path):
    path = _write_records(tmp_path / "r.tfrecord", [(1,), (2,), (1, 3), (2,), (), (1,)])
    records = tf.data.TFRecordDataset(path)
    assert sampling.shard_class_ids(records, 3) == [1, 2, 3]
    assert sampling.shard_class_ids(records.shard(2, 1), 3) == [1, 2]  # records 1, 3, 5: no class 3
    with pytest.raises(ValueError, match="class id 3 is outside 1..2"):
        sampling.shard_class_ids(records, 2)


def test_sampling_input_reader_samples_records_before_decoding(tmp_path):
    from official.core import config_definitions

    from tfmaskrcnn.dataloaders import input_reader as reader_lib

    images = _skewed_dataset([0.9, 0.07, 0.03], num_images=100, seed=2)
    path = _write_records(tmp_path / "train.tfrecord", images)
    frequency = sampling.class_image_frequency(images, 3)
    class_repeat = sampling.repeat_factors(frequency, sampling.choose_threshold(frequency))
    params = config_definitions.DataConfig(
        input_path=path, is_training=True, global_batch_size=64, shuffle_buffer_size=16, seed=4
    )
    seen_specs = []

    def record_sampler(shard):
        assert shard.kind == "all"
        fn = sampling.make_repeat_factor_sample_fn(class_repeat, seed=4, on="records")

        def apply(dataset):
            seen_specs.append(dataset.element_spec)
            return fn(dataset)

        return apply

    def decode(record):  # the decoder receives serialized records: the sampler ran before it
        seen_specs.append(record.dtype)
        return {
            "source_id": tf.io.parse_single_example(record, {"image/source_id": tf.io.FixedLenFeature([], tf.string)})[
                "image/source_id"
            ]
        }

    reader = reader_lib.SamplingInputReader(
        params,
        record_sampler=record_sampler,
        decoder_fn=decode,
        parser_fn=lambda decoded: tf.strings.to_number(decoded["source_id"], tf.int64),
    )
    length = int(20 * sum(sampling.image_repeat_factor(c, class_repeat) for c in images))
    stream = reader.read()
    # Still endless, as Model Garden's training stream: several workers then keep a static batch size.
    assert stream.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    sampled = [int(i) for batch in stream.take(length // 64).as_numpy_iterator() for i in batch]
    assert seen_specs == [tf.TensorSpec([], tf.string), tf.string]
    observed = sampling.class_image_frequency([images[i] for i in sampled], 3)
    expected = sampling.expected_image_frequency_after(images, class_repeat)
    np.testing.assert_allclose(observed, expected, rtol=0.05)


def test_sampling_input_reader_reports_the_shard_of_each_pipeline(tmp_path):
    from official.core import config_definitions

    from tfmaskrcnn.dataloaders import input_reader as reader_lib

    path = _write_records(tmp_path / "train.tfrecord", [(1,), (2,), (3,), (2,)])
    params = config_definitions.DataConfig(input_path=path, is_training=True, global_batch_size=2)
    reader = reader_lib.SamplingInputReader(params)
    assert reader.shard(None).kind == "all"
    shard = reader.shard(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1))
    assert (shard.kind, shard.pipeline_id, shard.num_pipelines) == ("records", 1, 2)
    assert _record_ids(shard.records()) == [1, 3]
    many = [_write_records(tmp_path / f"{i}.tfrecord", [(1,)]) for i in range(4)]
    params = config_definitions.DataConfig(input_path=",".join(many), is_training=True, global_batch_size=2)
    shard = reader_lib.SamplingInputReader(params).shard(tf.distribute.InputContext(2, 0))
    assert shard.kind == "files"


def test_sample_fn_plugs_into_model_gardens_input_reader(tmp_path):
    from official.core import config_definitions, input_reader
    from official.vision.dataloaders import tf_example_decoder

    images = _skewed_dataset([0.9, 0.07, 0.03], num_images=100, seed=2)
    pixel = tf.io.encode_png(tf.zeros([2, 2, 3], tf.uint8)).numpy()
    path = str(tmp_path / "train.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for index, classes in enumerate(images):

            def floats(value, n=len(classes)):  # noqa: B008  (binds this image's count)
                return tf.train.Feature(float_list=tf.train.FloatList(value=[value] * n))

            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixel])),
                "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(index).encode()])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
                "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=list(classes))),
                "image/object/is_crowd": tf.train.Feature(int64_list=tf.train.Int64List(value=[0] * len(classes))),
                "image/object/bbox/xmin": floats(0.0),
                "image/object/bbox/ymin": floats(0.0),
                "image/object/bbox/xmax": floats(1.0),
                "image/object/bbox/ymax": floats(1.0),
                "image/object/area": floats(4.0),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

    frequency = sampling.class_image_frequency(images, 3)
    class_repeat = sampling.repeat_factors(frequency, sampling.choose_threshold(frequency))
    params = config_definitions.DataConfig(
        input_path=path, is_training=True, global_batch_size=64, shuffle_buffer_size=16, seed=4
    )
    reader = input_reader.InputReader(
        params,
        decoder_fn=tf_example_decoder.TfExampleDecoder().decode,
        sample_fn=sampling.make_repeat_factor_sample_fn(class_repeat, seed=4),
        parser_fn=lambda decoded: tf.strings.to_number(decoded["source_id"], tf.int64),
    )
    length = int(20 * sum(sampling.image_repeat_factor(c, class_repeat) for c in images))
    sampled = [int(i) for batch in reader.read().take(length // 64).as_numpy_iterator() for i in batch]
    observed = sampling.class_image_frequency([images[i] for i in sampled], 3)
    expected = sampling.expected_image_frequency_after(images, class_repeat)
    np.testing.assert_allclose(observed, expected, rtol=0.05)
