"""The imgaug adapter: clear error without imgaug; aligned masks, boxes and classes with it.

imgaug 0.4.0 imports only with numpy < 2. In the main environment (numpy 2) only the
error test runs; `ci/imgaug_env.sh` runs this module in an environment with imgaug,
where every test must run.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_augment import SIGNATURE, assert_instances_aligned, make_example

from tfmaskrcnn.augment import imgaug_adapter

try:
    imgaug_adapter.require_imgaug()
    HAVE_IMGAUG = True
except ImportError:
    HAVE_IMGAUG = False

needs_imgaug = pytest.mark.skipif(not HAVE_IMGAUG, reason="imgaug not importable here; ci/imgaug_env.sh runs it")


@pytest.mark.skipif(HAVE_IMGAUG, reason="imgaug is importable here")
def test_missing_imgaug_names_the_extra_to_install():
    with pytest.raises(ImportError, match=r"pip install 'tfmaskrcnn\[imgaug\]' \(imgaug needs numpy<2\)"):
        imgaug_adapter.require_imgaug()
    with pytest.raises(ImportError, match=r"tfmaskrcnn\[imgaug\]"):
        imgaug_adapter.ImgaugAugmenter(pipeline=None)


def geometric_pipeline():
    iaa = imgaug_adapter.require_imgaug()
    return iaa.Sequential(
        [
            iaa.Fliplr(0.5),
            iaa.Flipud(0.5),
            iaa.Rot90((0, 3), keep_size=False),
            iaa.Affine(scale=(0.6, 1.6), rotate=(-30, 30), shear=(-10, 10), translate_percent=(-0.2, 0.2), order=1),
        ]
    )


@needs_imgaug
def test_geometric_pipeline_keeps_masks_boxes_classes_and_extras_aligned():
    augmenter = imgaug_adapter.ImgaugAugmenter(geometric_pipeline())
    fn = tf.function(lambda *a: augmenter(*a[:5], seed=a[5]), input_signature=SIGNATURE)
    rng = np.random.default_rng(0)
    for seed in range(40):
        image, boxes, masks, classes, extras = make_example(rng)
        out_image, out_boxes, out_masks, out_classes, out_extras = tf.nest.map_structure(
            lambda t: t.numpy(), fn(image, boxes, masks, classes, extras, [seed, 3])
        )
        n = len(out_classes)
        h, w = out_image.shape[:2]
        assert out_image.dtype == np.uint8 and out_masks.shape == (n, h, w) and out_boxes.shape == (n, 4)
        assert_instances_aligned(
            extras, out_image, out_boxes, out_masks, out_classes, out_extras, where=f"imgaug seed {seed}"
        )


@needs_imgaug
def test_same_seed_same_output_and_empty_example():
    augmenter = imgaug_adapter.ImgaugAugmenter(imgaug_adapter.standard_pipeline())
    image, boxes, masks, classes, extras = make_example(np.random.default_rng(4))
    a = augmenter(image, boxes, masks, classes, extras, seed=tf.constant([1, 2], tf.int64))
    b = augmenter(image, boxes, masks, classes, extras, seed=tf.constant([1, 2], tf.int64))
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    empty = augmenter(image, boxes[:0], masks[:0], classes[:0], {k: v[:0] for k, v in extras.items()})
    assert empty[1].shape == (0, 4) and empty[2].shape[0] == 0 and empty[0].shape[-1] == 3


@needs_imgaug
def test_boxes_only_and_parallel_tf_data_map():
    iaa = imgaug_adapter.require_imgaug()
    augmenter = imgaug_adapter.ImgaugAugmenter(iaa.Fliplr(1.0), seed_base=0)
    image, boxes, masks, classes, extras = make_example(np.random.default_rng(9))
    out = augmenter(image, boxes, None, classes, extras)
    assert out[2] is None
    flipped = boxes[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1]
    np.testing.assert_allclose(out[1].numpy(), flipped, atol=1e-5)

    examples = [make_example(np.random.default_rng(s)) for s in range(8)]
    ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=tuple(SIGNATURE[:5]))
    ds = ds.map(
        lambda i, b, m, c, e: imgaug_adapter.ImgaugAugmenter(geometric_pipeline())(i, b, m, c, e), num_parallel_calls=4
    )
    for out_image, out_boxes, out_masks, out_classes, out_extras in ds.as_numpy_iterator():
        assert len(out_boxes) == len(out_masks) == len(out_classes) == len(out_extras["tag"])
        np.testing.assert_array_equal(out_extras["tag"] // 100, out_classes)
