"""Where the objects of each class lie in the image plane: box centres read from converted TFRecords.

FRACAL's spatial term (`tfmaskrcnn.serving.fracal`) needs every training box's centre in
coordinates normalized by the image size. The converter writes Model Garden's normalized boxes
(`image/object/bbox/xmin` ... divided by the image width / height), so one pass parses only the
boxes, class labels and crowd flags, never the images.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def box_centres(files: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, class_id) of every non-crowd box of the records, centres in [0, 1] of the image."""
    import tensorflow as tf

    if not files:
        raise ValueError("no TFRecord files to read")
    keys = ("xmin", "xmax", "ymin", "ymax")
    features = {f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in keys}
    features["image/object/class/label"] = tf.io.VarLenFeature(tf.int64)
    features["image/object/is_crowd"] = tf.io.VarLenFeature(tf.int64)

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, features)
        return {key: tf.sparse.to_dense(value) for key, value in parsed.items()}

    xs, ys, ids = [], [], []
    for path in sorted(files):
        for record, example in enumerate(tf.data.TFRecordDataset(path).map(parse).as_numpy_iterator()):
            labels = example["image/object/class/label"]
            crowd = example["image/object/is_crowd"]
            box = {k: example[f"image/object/bbox/{k}"] for k in keys}
            if any(v.size != labels.size for v in box.values()):
                raise ValueError(
                    f"{path}: record {record} has {labels.size} labels but boxes of other lengths; "
                    "re-run `tfmaskrcnn convert`"
                )
            kept = crowd == 0 if crowd.size == labels.size else np.ones(labels.size, bool)
            xs.append(((box["xmin"] + box["xmax"]) / 2)[kept])
            ys.append(((box["ymin"] + box["ymax"]) / 2)[kept])
            ids.append(labels[kept])
    if not xs:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64), np.concatenate(ids)
