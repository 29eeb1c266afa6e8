"""The instance bank of class-balanced copy-paste, built from the training records.

The paste itself is the pure TF op `tfmaskrcnn.augment.copy_paste` (layer 2, so the
preview can use it too); this module reads the records, chooses which instances to keep
and with what probability to paste each class, because that needs the records and the
sampling math of `dataloaders.sampling` (layer 3).

Building the bank (once per input pipeline, i.e. per host; `build_copy_paster` caches it
per process):

1. One pass over the records that parses only the class and crowd features (no image
   decoding) lists every non-crowd instance and gives the per-class instance counts and
   image frequencies (the same numbers `tfmaskrcnn stats` shows).
2. `class_quotas` shares `bank_size` over the classes by water-filling: a class with
   fewer instances than the fair share is kept whole, the rest split what is left. So
   rare classes are all in the bank and the frequent ones are subsampled, uniformly
   without replacement under the seed.
3. Only the records holding a chosen instance are decoded (Model Garden's
   `TfExampleDecoder`), and each chosen instance is cut out at its mask's tight box and
   resized to `crop_size` x `crop_size` (RGB + mask), its size in the source image kept.

Why fixed-size crops (64 x 64 by default) and not padded variable-size crops: the bank
is one dense uint8 tensor [B, S, S, 4] that a map function gathers from with one index,
its memory is known in advance (2,000 instances x 64 x 64 x 4 bytes = 33 MB) whatever
the image size (a padded bank must pad every crop to the largest object: at 640 px
COCO, hundreds of MB), and the paste warps the crop straight to its target size in one
resampling either way. The price is detail on objects much larger than the crop:
pasted at 200 px, a 64 px crop is upsampled about 3x. Raise `crop_size` for such data.

Class probabilities of a paste (`class_sampling`):
* `repeat_factor`: p(c) proportional to LVIS's r(c) = max(1, sqrt(t / f(c))) with the
  image frequencies f of the records and t the sampling threshold (chosen from the data
  by `sampling.choose_threshold` when not given);
* `inverse`: p(c) proportional to 1 / (instances of c);
* `uniform`: the same for every class in the bank.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmaskrcnn.augment import copy_paste as paste_ops
from tfmaskrcnn.dataloaders import sampling

MIN_SOURCE_PIXELS = 16  # instances with a smaller mask are not worth pasting
_LABEL_FEATURES = ("image/object/class/label", "image/object/is_crowd")


def copy_paste_params(config, max_total_instances: Optional[int] = None) -> paste_ops.CopyPasteParams:
    """`CopyPasteParams` of a `CopyPasteConfig`, checking the fields only the bank uses too."""
    where = "task.train_data.parser.copy_paste"
    if config.class_sampling not in paste_ops.CLASS_SAMPLING:
        raise ValueError(
            f"{where}.class_sampling={config.class_sampling!r}: use one of {', '.join(paste_ops.CLASS_SAMPLING)}"
        )
    if not config.bank_size >= 1:
        raise ValueError(f"{where}.bank_size={config.bank_size}: use a positive number of instances (e.g. 2000)")
    if not 8 <= config.crop_size <= 512:
        raise ValueError(f"{where}.crop_size={config.crop_size}: use 8..512 pixels (64 is typical)")
    return paste_ops.CopyPasteParams(
        max_instances=int(config.max_instances),
        scale_min=float(config.scale_min),
        scale_max=float(config.scale_max),
        blend_sigma=float(config.blend_sigma),
        max_total_instances=max_total_instances,
    )


@dataclasses.dataclass
class InstanceIndex:
    """Every non-crowd instance of the records: (record number, instance number, class id)."""

    records: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    num_images: int
    num_classes: int  # largest class id seen, or the caller's K

    def instance_counts(self) -> np.ndarray:
        """K entries, class ids 1..K."""
        return np.bincount(self.classes, minlength=self.num_classes + 1)[1:]

    def image_frequency(self) -> np.ndarray:
        pairs = np.unique(np.stack([self.records, self.classes], axis=1), axis=0) if len(self.classes) else []
        counts = np.zeros(self.num_classes + 1)
        for _, class_id in pairs:
            counts[class_id] += 1
        return counts[1:] / max(self.num_images, 1)


def index_instances(files: Sequence[str], num_classes: Optional[int] = None) -> InstanceIndex:
    """One pass over the records parsing only labels and crowd flags."""
    import tensorflow as tf

    features = {name: tf.io.VarLenFeature(tf.int64) for name in _LABEL_FEATURES}

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, features)
        classes = tf.sparse.to_dense(parsed[_LABEL_FEATURES[0]])
        crowd = tf.sparse.to_dense(parsed[_LABEL_FEATURES[1]])
        crowd = tf.pad(crowd, [[0, tf.maximum(tf.size(classes) - tf.size(crowd), 0)]])[: tf.size(classes)]
        return classes, crowd

    records, instances, classes = [], [], []
    num_images = 0
    dataset = tf.data.TFRecordDataset(list(files)).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    for record, (labels, crowd) in enumerate(dataset.as_numpy_iterator()):
        num_images += 1
        for instance, (label, is_crowd) in enumerate(zip(labels, crowd)):
            if is_crowd or label < 1 or (num_classes is not None and label > num_classes):
                continue
            records.append(record)
            instances.append(instance)
            classes.append(int(label))
    classes = np.asarray(classes, np.int64)
    k = num_classes if num_classes is not None else int(classes.max()) if len(classes) else 0
    return InstanceIndex(np.asarray(records, np.int64), np.asarray(instances, np.int64), classes, num_images, k)


def class_quotas(counts: Sequence[int], bank_size: int) -> np.ndarray:
    """Instances to keep per class: water-filling `bank_size` so that small classes are kept whole.

    The result q has q[c] <= counts[c], sum(q) = min(bank_size, sum(counts)), and there is a
    level L with q[c] = min(counts[c], L) (up to one instance of rounding per class).
    """
    counts = np.asarray(counts, np.int64)
    quotas = np.zeros_like(counts)
    left = int(min(bank_size, counts.sum()))
    open_classes = [c for c in np.argsort(counts, kind="stable") if counts[c] > 0]
    while open_classes and left > 0:
        share = left // len(open_classes)
        smallest = open_classes[0]
        if counts[smallest] <= share:  # fits whole: keep all of it
            quotas[smallest] = counts[smallest]
            left -= int(counts[smallest])
            open_classes.pop(0)
            continue
        # Every remaining class is larger than the share: split evenly, the remainder to the largest.
        for position, c in enumerate(open_classes):
            extra = 1 if position >= len(open_classes) - (left - share * len(open_classes)) else 0
            quotas[c] = min(counts[c], share + extra)
        break
    return quotas


def choose_instances(index: InstanceIndex, bank_size: int, seed: int) -> np.ndarray:
    """Positions in `index` of the instances to keep (per-class quotas, uniform without replacement)."""
    rng = np.random.default_rng(seed)
    counts = index.instance_counts()
    quotas = class_quotas(counts, bank_size)
    chosen = []
    for class_id in range(1, index.num_classes + 1):
        positions = np.flatnonzero(index.classes == class_id)
        quota = int(quotas[class_id - 1])
        if quota:
            chosen.append(np.sort(rng.choice(positions, quota, replace=False)))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros([0], np.int64)


def crop_instance(image: np.ndarray, mask: np.ndarray, crop_size: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(RGB + mask*255 uint8 [S, S, 4], source (height, width)) of one instance, or None if too small.

    Pixels outside the mask take the mean colour inside it, so resampling at the paste
    does not blend the source's background into the object's edge.
    """
    import tensorflow as tf

    on = mask > 0.5
    if on.sum() < MIN_SOURCE_PIXELS:
        return None
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = image[y0:y1, x0:x1].astype(np.float32)
    crop_mask = on[y0:y1, x0:x1]
    crop[~crop_mask] = crop[crop_mask].mean(axis=0)
    stacked = np.concatenate([crop, crop_mask[..., None].astype(np.float32) * 255.0], axis=-1)
    resized = tf.image.resize(stacked, [crop_size, crop_size], method="bilinear", antialias=True).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8), np.array([y1 - y0, x1 - x0], np.float32)


def class_probabilities(scheme: str, index: InstanceIndex, threshold: Optional[float] = None) -> np.ndarray:
    """Paste probability per class id 0..K (0 for background); classes without instances get 0."""
    counts = index.instance_counts().astype(np.float64)
    present = counts > 0
    if scheme == "uniform":
        weights = present.astype(np.float64)
    elif scheme == "inverse":
        weights = np.where(present, 1.0 / np.maximum(counts, 1.0), 0.0)
    elif scheme == "repeat_factor":
        frequency = index.image_frequency()
        if threshold is None:
            threshold = sampling.choose_threshold(frequency)
        weights = np.where(present, sampling.repeat_factors(frequency, threshold), 0.0)
    else:
        raise ValueError(f"class_sampling={scheme!r}: use one of {', '.join(paste_ops.CLASS_SAMPLING)}")
    probs = np.concatenate([[0.0], weights])
    return probs / probs.sum()


@dataclasses.dataclass
class BankContents:
    """The numpy side of a bank, with where each instance came from."""

    pixels: np.ndarray  # uint8 [B, S, S, 4]
    sizes: np.ndarray  # float32 [B, 2]
    classes: np.ndarray  # int [B]
    sources: List[Tuple[str, int]]  # (source_id, instance number in that record)
    class_probs: np.ndarray  # [K + 1]
    index: InstanceIndex

    def to_bank(self) -> paste_ops.InstanceBank:
        return paste_ops.make_bank(self.pixels, self.sizes, self.classes, self.class_probs)

    def summary(self) -> Dict[int, Tuple[int, int, float]]:
        """class id -> (instances in the records, in the bank, paste probability)."""
        counts = self.index.instance_counts()
        kept = np.bincount(self.classes, minlength=len(self.class_probs))
        return {c: (int(counts[c - 1]), int(kept[c]), float(self.class_probs[c])) for c in range(1, len(counts) + 1)}


def read_bank(
    files: Sequence[str],
    bank_size: int = 2000,
    crop_size: int = 64,
    class_sampling: str = "repeat_factor",
    threshold: Optional[float] = None,
    seed: int = 0,
    num_classes: Optional[int] = None,
) -> BankContents:
    """Reads the instance bank from TFRecord `files` (see the module doc)."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    index = index_instances(files, num_classes)
    if len(index.classes) == 0:
        raise ValueError(f"copy-paste: {list(files)} hold no non-crowd instance to paste; disable copy_paste")
    chosen = choose_instances(index, bank_size, seed)
    wanted: Dict[int, List[int]] = {}
    for position in chosen:
        wanted.setdefault(int(index.records[position]), []).append(int(position))
    wanted_records = np.array(sorted(wanted), np.int64)
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    dataset = (
        tf.data.TFRecordDataset(list(files))
        .enumerate()
        .filter(lambda i, _: tf.reduce_any(tf.equal(i, wanted_records)))
        .map(lambda i, serialized: (i, decoder.decode(serialized)), num_parallel_calls=tf.data.AUTOTUNE)
    )
    pixels, sizes, classes, sources = [], [], [], []
    for record, decoded in dataset:
        record = int(record)
        image = decoded["image"].numpy()
        masks = decoded["groundtruth_instance_masks"].numpy()
        source_id = decoded["source_id"].numpy().decode()
        for position in wanted[record]:
            instance = int(index.instances[position])
            cropped = crop_instance(image, masks[instance], crop_size)
            if cropped is None:
                continue
            pixels.append(cropped[0])
            sizes.append(cropped[1])
            classes.append(int(index.classes[position]))
            sources.append((source_id, instance))
    if not pixels:
        raise ValueError(
            f"copy-paste: every chosen instance of {list(files)} has fewer than {MIN_SOURCE_PIXELS} mask pixels"
        )
    probs = class_probabilities(class_sampling, index, threshold)
    # A class whose instances were all too small to crop has none in the bank: it gets 0.
    in_bank = np.bincount(classes, minlength=len(probs)) > 0
    probs = np.where(in_bank, probs, 0.0)
    return BankContents(np.stack(pixels), np.stack(sizes), np.asarray(classes), sources, probs / probs.sum(), index)


@functools.lru_cache(maxsize=4)
def _cached_bank(files, bank_size, crop_size, class_sampling, threshold, seed, num_classes):
    return read_bank(list(files), bank_size, crop_size, class_sampling, threshold, seed, num_classes)


def build_copy_paster(
    config,
    files: Sequence[str],
    max_total_instances: Optional[int] = None,
    threshold: Optional[float] = None,
    num_classes: Optional[int] = None,
):
    """The parser's copy-paste callable for a `CopyPasteConfig` (validated here), or None when disabled.

    The bank is read once per process for the same records and settings.
    """
    if not config.enabled:
        return None
    params = copy_paste_params(config, max_total_instances)
    seed = 0 if config.seed is None else int(config.seed)
    contents = _cached_bank(
        tuple(files), int(config.bank_size), int(config.crop_size), config.class_sampling, threshold, seed, num_classes
    )
    return paste_ops.make_copy_paster(contents.to_bank(), params, config.seed)
