"""Oversampling of images with rare classes: repeat-factor and class-aware sampling.

Repeat-factor sampling (Gupta et al. 2019, LVIS): a class c that appears in a
fraction f(c) of the training images gets r(c) = max(1, sqrt(t / f(c))); an image
is repeated r(I) = max over its classes of r(c) times per epoch (1 for an image with
no object). Non-integer r(I) is rounded stochastically, floor(r) + Bernoulli(r -
floor(r)), so its expectation is r(I). detectron2's `REPEAT_SQRT=False` variant
(its PR #5245) uses r(c) = max(1, t / f(c)) instead (`sqrt=False`). Every factor is
capped at `max_repeat` (10 by default: LVIS's own largest, t = 0.001 on a class
found in 1 image in 100k), so no threshold repeats an image hundreds of times.

Conventions: per-class arrays have K entries, entry i is class id i + 1 (ids 1..K,
0 is background and never a ground-truth class). Crowd instances do not count.

The tf.data functions work on one of two kinds of stream, chosen by `on`:

* ``on="records"`` (what training uses): serialized `tf.train.Example` strings. Only
  `image/object/class/label` and `image/object/is_crowd` are parsed to decide the
  draws (`record_classes`), so the repeat-factor shuffle buffer holds encoded records
  and class-aware sampling filters encoded records; images and masks are decoded once,
  after sampling, per drawn example. `tfmaskrcnn.dataloaders.input_reader.SamplingInputReader`
  applies them to Model Garden's repeated training stream before its decoder.
* ``on="decoded"``: decoded dicts (`groundtruth_classes`, optionally
  `groundtruth_is_crowd`), as Model Garden's `InputReader(sample_fn=...)` sees them after
  decoding. This was the training path before; its shuffle buffer holds decoded images
  and full-size masks and class-aware sampling decodes the stream once per class. Kept for
  decoders whose labels are not integer ids in the record (the label-map decoder) and for
  the memory benchmark (`benchmarks/sampler_memory.py`).

For training the stream already repeats, so the per-image draw happens again on every
pass. With `DataConfig.cache = True` the reader caches *after* parsing, which freezes
the first pass's draws (still right on average, but the same copies every epoch).
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import numpy as np

# A class is "rare" if it is in fewer than 1/DEFAULT_TOLERANCE as many images as the
# most common class; see `choose_threshold`.
DEFAULT_TOLERANCE = 2.0
# The largest repeat factor: LVIS's t = 0.001 gives 10x to a class in 1 of 100k images.
DEFAULT_MAX_REPEAT = 10.0
LVIS_THRESHOLD = 0.001


def class_image_frequency(image_classes: Iterable[Iterable[int]], num_classes: int) -> np.ndarray:
    """Fraction of images that contain each class 1..K (K entries)."""
    images_with = np.zeros(num_classes, dtype=np.int64)
    num_images = 0
    for classes in image_classes:
        num_images += 1
        for class_id in set(int(c) for c in classes):
            _check_class_id(class_id, num_classes)
            images_with[class_id - 1] += 1
    if num_images == 0:
        raise ValueError("cannot compute image frequencies of an empty dataset")
    return images_with / num_images


def _check_class_id(class_id: int, num_classes: int) -> None:
    if not 1 <= class_id <= num_classes:
        raise ValueError(f"class id {class_id} is outside 1..{num_classes} (0 is background)")


def repeat_factors(
    image_frequency: np.ndarray, threshold: float, sqrt: bool = True, max_repeat: Optional[float] = None
) -> np.ndarray:
    """Per-class repeat factors r(c) = max(1, sqrt(threshold / f(c))), or max(1, threshold / f(c))
    with `sqrt` False (detectron2's REPEAT_SQRT=False), at most `max_repeat` when given.

    A class with f(c) = 0 is in no image, so its factor never applies; it is 1.
    """
    frequency = np.asarray(image_frequency, dtype=np.float64)
    if np.any(frequency < 0) or np.any(frequency > 1):
        raise ValueError(f"image frequencies must be in [0, 1], got {frequency.tolist()}")
    if not threshold > 0:
        raise ValueError(f"repeat-factor threshold must be > 0, got {threshold}")
    if max_repeat is not None and not max_repeat >= 1:
        raise ValueError(f"the largest repeat factor must be >= 1, got {max_repeat}")
    factors = np.ones_like(frequency)
    present = frequency > 0
    ratio = threshold / frequency[present]
    factors[present] = np.maximum(1.0, np.sqrt(ratio) if sqrt else ratio)
    if max_repeat is not None:
        factors = np.minimum(factors, float(max_repeat))
    return factors


def image_repeat_factor(classes_in_image: Iterable[int], class_repeat: np.ndarray) -> float:
    """r(I): the largest class factor among the image's classes, 1 without objects."""
    factor = 1.0
    for class_id in classes_in_image:
        _check_class_id(int(class_id), len(class_repeat))
        factor = max(factor, float(class_repeat[int(class_id) - 1]))
    return factor


def choose_threshold(
    image_frequency: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    sqrt: bool = True,
    max_repeat: Optional[float] = DEFAULT_MAX_REPEAT,
) -> float:
    """A threshold for datasets where LVIS's t = 0.001 boosts nothing, LVIS's own on LVIS-like ones.

    Rule: t = max_c f(c) / tolerance (tolerance 2 by default), lowered to the t at which the
    rarest class present repeats exactly `max_repeat` times when f_max / 2 would repeat it more
    (`choose_threshold_rule` says which applied). Classes found in at least half as many images
    as the most common class are left alone (r = 1); a rarer class gets r(c) = sqrt(f_max /
    (2 f(c))), so its sampled frequency f(c) r(c) = sqrt(f(c) f_max / 2) halves its gap to the
    common class in log space. The rule depends only on ratios, so it behaves the same on 400
    images as on 400k, where LVIS's absolute 0.001 means "fewer than 1 image in 1000" and on a
    thousand-image dataset boosts nothing. On a long tail it would not be sane: with f_max = 0.5
    a class with f = 1e-5 would repeat 158x; the limit (10 by default) gives t = 100 f_min, which
    is LVIS's 0.001 for LVIS's rarest classes (1 image in 100k).

    Numbers (simulated, 400 images, 1-4 objects each, seed 0):
    * instances split 0.9/0.07/0.03: f = 0.975/0.145/0.073, t = 0.488,
      r = 1/1.83/2.59, image frequency after sampling 0.956/0.223/0.153
      (the rarest class is seen 2.1x as often). With t = the median f (0.145) the
      middle class would get nothing and the rarest only 1.4x.
    * balanced split: f = 0.575/0.62/0.63, t = 0.315, r = 1/1/1 (t = max f would
      still give a 1.05x jitter from sampling noise alone).
    """
    return _choose(image_frequency, tolerance, sqrt, max_repeat)[0]


def choose_threshold_rule(
    image_frequency: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    sqrt: bool = True,
    max_repeat: Optional[float] = DEFAULT_MAX_REPEAT,
) -> str:
    """Which rule `choose_threshold` applied, in words with its numbers (for params.yaml and class_balance.md)."""
    return _choose(image_frequency, tolerance, sqrt, max_repeat)[1]


def _choose(image_frequency, tolerance, sqrt, max_repeat):
    frequency = np.asarray(image_frequency, dtype=np.float64)
    if frequency.size == 0 or not np.max(frequency) > 0:
        raise ValueError("cannot choose a repeat-factor threshold: no class appears in any image")
    if not tolerance >= 1.0:
        raise ValueError(f"tolerance must be >= 1, got {tolerance}")
    f_max, f_min = float(np.max(frequency)), float(np.min(frequency[frequency > 0]))
    threshold = f_max / tolerance
    rule = f"f_max / {tolerance:g} = {f_max:.4g} / {tolerance:g}"
    if max_repeat is not None:
        capped = f_min * (max_repeat**2 if sqrt else max_repeat)  # the rarest class at exactly max_repeat
        if capped < threshold:
            would = (threshold / f_min) ** (0.5 if sqrt else 1.0)
            rule = (
                f"lowered from f_max / {tolerance:g} = {threshold:.4g} (which repeats the rarest class, "
                f"f = {f_min:.3g}, {would:.0f}x) to {capped:.4g}, where it repeats {max_repeat:g}x"
            )
            threshold = capped
    return float(threshold), rule


def expected_image_frequency_after(image_classes: Sequence[Iterable[int]], class_repeat: np.ndarray) -> np.ndarray:
    """Per-class share of sampled images that contain the class, K entries.

    sum_I r(I) [c in I] / sum_I r(I): the value a long run of repeat-factor
    sampling converges to (stochastic rounding keeps E[copies of I] = r(I)).
    """
    num_classes = len(class_repeat)
    weighted = np.zeros(num_classes)
    total = 0.0
    for classes in image_classes:
        present = sorted(set(int(c) for c in classes))
        factor = image_repeat_factor(present, class_repeat)
        total += factor
        for class_id in present:
            weighted[class_id - 1] += factor
    if total == 0:
        raise ValueError("cannot compute frequencies of an empty dataset")
    return weighted / total


RECORD_CLASS_KEY = "image/object/class/label"
RECORD_CROWD_KEY = "image/object/is_crowd"
ON = ("records", "decoded")


def _non_crowd_classes(tf, element):
    classes = tf.cast(tf.reshape(element["groundtruth_classes"], [-1]), tf.int32)
    if "groundtruth_is_crowd" in element:
        is_crowd = tf.cast(tf.reshape(element["groundtruth_is_crowd"], [-1]), tf.bool)
        classes = tf.boolean_mask(classes, tf.logical_not(is_crowd))
    return classes


def record_classes(serialized):
    """Non-crowd class ids of one serialized tf.Example, parsing only the two label features.

    The image and the masks stay encoded: this is the cheap look at a record the record
    samplers decide on. A record without `is_crowd` counts every instance.
    """
    import tensorflow as tf

    features = tf.io.parse_single_example(
        serialized,
        {
            RECORD_CLASS_KEY: tf.io.VarLenFeature(tf.int64),
            RECORD_CROWD_KEY: tf.io.VarLenFeature(tf.int64),
        },
    )
    classes = tf.cast(tf.sparse.to_dense(features[RECORD_CLASS_KEY]), tf.int32)
    crowd = tf.sparse.to_dense(features[RECORD_CROWD_KEY])
    # As Model Garden's decoder: is_crowd when the record has it (one entry per instance), else none.
    is_crowd = tf.cond(
        tf.equal(tf.size(crowd), tf.size(classes)),
        lambda: tf.cast(crowd, tf.bool),
        lambda: tf.zeros_like(classes, tf.bool),
    )
    return tf.boolean_mask(classes, tf.logical_not(is_crowd))


def _classes_fn(on: str):
    if on not in ON:
        raise ValueError(
            f"sampling runs on {ON[0]!r} (serialized tf.Examples) or {ON[1]!r} (decoded dicts), got {on!r}"
        )
    if on == "records":
        return record_classes
    import tensorflow as tf

    return lambda element: _non_crowd_classes(tf, element)


def shard_class_ids(records, num_classes: int, batch_size: int = 256) -> List[int]:
    """Class ids 1..K with at least one non-crowd instance in a finite stream of serialized records.

    One pass that parses only the labels (`record_classes`): how a host checks its own shard
    before class-aware sampling, whose stream for an absent class would never yield.
    """
    import tensorflow as tf

    present = np.zeros(num_classes + 1, dtype=bool)
    with tf.init_scope():  # eager even when a dataset function is traced
        labels = records.map(record_classes, num_parallel_calls=tf.data.AUTOTUNE).ragged_batch(batch_size)
        batches = [np.asarray(batch.flat_values, dtype=np.int64) for batch in labels.prefetch(2)]
    for values in batches:
        if values.size:
            if values.min() < 1 or values.max() > num_classes:
                bad = values[(values < 1) | (values > num_classes)][0]
                raise ValueError(f"class id {int(bad)} is outside 1..{num_classes} (0 is background)")
            present[values] = True
    return [int(c) for c in np.flatnonzero(present[1:]) + 1]


def make_repeat_factor_sample_fn(
    class_repeat: np.ndarray, seed: Optional[int] = None, shuffle_buffer: int = 64, on: str = "decoded"
):
    """`fn(dataset) -> dataset`: repeat-factor sampling.

    Each element (`on="decoded"`: a decoded dict with `groundtruth_classes`, optionally
    `groundtruth_is_crowd`; `on="records"`: a serialized tf.Example) is emitted floor(r)
    or floor(r) + 1 times, drawn per element, then shuffled with a `shuffle_buffer` so
    copies do not sit together (on records the buffer holds encoded records).
    No global state: every host applies it to its own shard. `seed` makes the
    draws and the shuffle reproducible (give each host its own, e.g. seed + host
    index, if hosts should not share the random stream).
    """
    import tensorflow as tf

    classes_of = _classes_fn(on)
    factors = np.asarray(class_repeat, dtype=np.float32)
    if factors.ndim != 1 or factors.size == 0 or np.any(factors < 1):
        raise ValueError(f"class_repeat must be K factors >= 1, got {factors.tolist()}")
    num_classes = int(factors.size)
    # Indexed by class id: entry 0 (background, never a ground truth) repeats once.
    table = tf.constant(np.concatenate([[1.0], factors]).astype(np.float32))

    def copies(element, random_bits):
        classes = classes_of(element)
        in_range = tf.debugging.assert_less_equal(
            tf.reduce_max(tf.concat([[0], classes], 0)),
            num_classes,
            message=f"groundtruth_classes has an id above num classes {num_classes}; "
            "the repeat factors were computed for another label map",
        )
        with tf.control_dependencies([in_range]):
            factor = tf.reduce_max(tf.concat([[1.0], tf.gather(table, classes)], 0))
        # 24 random bits -> uniform in [0, 1) for the stochastic rounding.
        uniform = tf.cast(tf.bitwise.bitwise_and(random_bits, 0xFFFFFF), tf.float32) / float(1 << 24)
        whole = tf.floor(factor)
        count = whole + tf.cast(uniform < factor - whole, tf.float32)
        return element, tf.cast(count, tf.int64)

    def sample_fn(dataset):
        draws = tf.data.Dataset.random(seed=seed)
        dataset = tf.data.Dataset.zip((dataset, draws)).map(copies, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.flat_map(lambda element, count: tf.data.Dataset.from_tensors(element).repeat(count))
        if shuffle_buffer > 1:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        return dataset

    return sample_fn


def make_class_aware_sample_fn(
    num_classes: int, seed: Optional[int] = None, class_ids: Optional[Sequence[int]] = None, on: str = "decoded"
):
    """`fn(dataset) -> dataset`: class-aware sampling (Shen et al. 2016).

    Each output element picks a class uniformly among `class_ids` (default 1..K),
    then the next image of the stream that contains it: one filtered stream per
    class, mixed by `tf.data.Dataset.sample_from_datasets`.

    Cost: every class stream reads the input on its own and finds an image of class c
    after about 1 / f(c) elements, so each sampled image costs (1/K) sum_c 1/f(c) reads
    (7.2 for f = 0.975/0.145/0.073). With `on="records"` those are label-only parses
    of serialized records and the drawn record is decoded once, after sampling; with
    `on="decoded"` every one of them is a full image decode. The input must repeat
    (training), and every class in `class_ids` must occur in this host's shard: a
    stream for an absent class never yields and the pipeline would wait forever. Pass
    the ids of classes with images in the shard (`shard_class_ids`, or
    `ClassStats.present_class_ids()` when the host reads all the data).
    """
    import tensorflow as tf

    classes_of = _classes_fn(on)

    ids = list(range(1, num_classes + 1)) if class_ids is None else [int(c) for c in class_ids]
    if not ids:
        raise ValueError("class-aware sampling needs at least one class id")
    for class_id in ids:
        _check_class_id(class_id, num_classes)

    def contains(class_id):
        return lambda element: tf.reduce_any(tf.equal(classes_of(element), class_id))

    def sample_fn(dataset):
        streams = [dataset.filter(contains(class_id)) for class_id in ids]
        return tf.data.Dataset.sample_from_datasets(streams, seed=seed)

    return sample_fn
