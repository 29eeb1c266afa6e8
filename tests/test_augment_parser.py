"""AugmentingParser in front of Model Garden's Mask R-CNN parser, and `show-augment`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
from official.vision.dataloaders import maskrcnn_input, tf_example_decoder
from test_augment import make_example

from tfmaskrcnn.augment import ops as augment
from tfmaskrcnn.augment import presets as augment_presets
from tfmaskrcnn.augment import preview as show_augment
from tfmaskrcnn.dataloaders.parser import AugmentingParser, augment_decoded

PARSER_ARGS = dict(
    output_size=[64, 64],
    min_level=2,
    max_level=4,
    num_scales=1,
    aspect_ratios=[1.0],
    anchor_size=2.0,
    include_mask=True,
    mask_crop_size=14,
    max_num_instances=8,
    dtype="float32",
)


def serialize(image, boxes, masks, classes, is_crowd, source_id=7) -> bytes:
    """A tf.Example in Model Garden's TfExampleDecoder layout (one 0/1 PNG per mask)."""

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, v))))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, v))))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v)))

    pngs = [tf.io.encode_png(m[..., None].astype(np.uint8)).numpy() for m in masks]
    feature = {
        "image/encoded": strings([tf.io.encode_png(image).numpy()]),
        "image/height": ints([image.shape[0]]),
        "image/width": ints([image.shape[1]]),
        "image/source_id": strings([str(source_id).encode()]),
        "image/object/bbox/ymin": floats(boxes[:, 0]),
        "image/object/bbox/xmin": floats(boxes[:, 1]),
        "image/object/bbox/ymax": floats(boxes[:, 2]),
        "image/object/bbox/xmax": floats(boxes[:, 3]),
        "image/object/class/label": ints(classes),
        "image/object/is_crowd": ints(is_crowd),
        "image/object/area": floats(masks.sum(axis=(1, 2))),
        "image/object/mask": strings(pngs),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(5)
    out, have_empty = [], False
    while len(out) < 4:  # three examples with instances (some crowd) and one without any
        image, boxes, masks, classes, extras = make_example(rng)
        empty = len(classes) == 0
        if (len(out) < 3 and len(classes) >= 2) or (len(out) == 3 and empty and not have_empty):
            out.append(serialize(image, boxes, masks, classes, extras["is_crowd"], source_id=len(out) + 1))
            have_empty |= empty
    return out


def parse_all(parser, records):
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    ds = tf.data.Dataset.from_tensor_slices(records).map(decoder.decode).map(parser.parse_fn(is_training=True))
    return list(ds.as_numpy_iterator())


def structure(output):
    return tf.nest.map_structure(lambda a: (a.shape, a.dtype), output)


def test_preset_none_is_exactly_the_stock_parser(records):
    stock = parse_all(maskrcnn_input.Parser(**PARSER_ARGS), records)
    assert augment_presets.build_augmenter(augment_presets.AugmentationConfig(preset="none")) is None
    skipped = parse_all(AugmentingParser(augmenter=None, **PARSER_ARGS), records)
    # An identity augmenter still runs the decoded dict through our code path.
    identity = parse_all(
        AugmentingParser(augmenter=augment_presets.make_augmenter(augment.AugmentationParams()), **PARSER_ARGS), records
    )
    for ours in (skipped, identity):
        for (stock_image, stock_labels), (image, labels) in zip(stock, ours):
            tf.nest.assert_same_structure(stock_labels, labels)
            np.testing.assert_array_equal(stock_image, image)
            # The RPN targets come from Model Garden's random fg/bg anchor sampler (two stock
            # runs differ too); everything else is deterministic and must match exactly.
            for key in set(labels) - {"rpn_score_targets", "rpn_box_targets"}:
                for x, y in zip(tf.nest.flatten(stock_labels[key]), tf.nest.flatten(labels[key])):
                    np.testing.assert_array_equal(x, y, err_msg=key)


def test_augmented_output_has_the_stock_structure_and_valid_targets(records, preset="heavy"):
    stock = parse_all(
        maskrcnn_input.Parser(aug_rand_hflip=True, aug_scale_min=0.8, aug_scale_max=1.25, **PARSER_ARGS), records
    )
    augmenter = augment_presets.build_augmenter(augment_presets.AugmentationConfig(preset=preset, seed=3))
    ours = parse_all(
        AugmentingParser(
            augmenter=augmenter, aug_rand_hflip=True, aug_scale_min=0.8, aug_scale_max=1.25, **PARSER_ARGS
        ),
        records,
    )
    assert len(ours) == len(stock)
    for (image, labels), stock_output in zip(ours, stock):
        assert structure((image, labels)) == structure(stock_output)
        assert np.isfinite(image).all()
        classes = labels["gt_classes"]
        valid = classes > 0
        assert set(classes[~valid]) <= {-1}
        masks = labels["gt_masks"][valid]
        assert ((masks >= 0) & (masks <= 1)).all()
        boxes = labels["gt_boxes"][valid]
        assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_rot90_updates_image_size_and_keeps_crowd_flags(records):
    def quarter_turn(image, boxes, masks, classes, extras):
        sample = {"image": image, "boxes": boxes, "masks": masks, "classes": classes, "extras": extras}
        out = augment.rotate90(sample, 1)
        return out["image"], out["boxes"], out["masks"], out["classes"], out["extras"]

    parser = AugmentingParser(augmenter=quarter_turn, skip_crowd_during_training=False, **PARSER_ARGS)
    crowd_skipping = AugmentingParser(augmenter=quarter_turn, skip_crowd_during_training=True, **PARSER_ARGS)
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    crowd_seen = 0
    for record in records:
        data = decoder.decode(tf.constant(record))
        _, labels = parser._parse_train_data(data)
        height, width = data["image"].shape[:2]
        original_size = labels["image_info"][0].numpy()
        np.testing.assert_array_equal(original_size, [width, height])
        assert int((labels["gt_classes"].numpy() > 0).sum()) == int(tf.shape(data["groundtruth_classes"])[0])
        # The crowd flags come out of the turn with their instances (rot90 keeps every instance,
        # in order), and Model Garden's crowd skipping then drops exactly the crowd instances.
        is_crowd = data["groundtruth_is_crowd"].numpy()
        turned = augment_decoded(data, quarter_turn)
        np.testing.assert_array_equal(turned["groundtruth_is_crowd"].numpy(), is_crowd)
        _, skipped_labels = crowd_skipping._parse_train_data(data)
        assert int((skipped_labels["gt_classes"].numpy() > 0).sum()) == int((~is_crowd).sum())
        crowd_seen += int(is_crowd.sum())
    assert crowd_seen > 0


def test_show_augment_writes_a_grid(tmp_path, records, capsys):
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    names = ["red", "green", "blue", "yellow", "cyan"]
    (tmp_path / "label_map.json").write_text(
        json.dumps(
            {
                "format": "tfmaskrcnn.label_map",
                "version": 1,
                "classes": [{"id": i + 1, "name": n, "coco_id": i + 1} for i, n in enumerate(names)],
            }
        )
    )
    parser = argparse.ArgumentParser()
    show_augment.add_arguments(parser)
    output = tmp_path / "out" / "grid.png"
    args = parser.parse_args(
        [
            str(tmp_path),
            "--preset",
            "heavy",
            "--output",
            str(output),
            "--num-images",
            "2",
            "--samples",
            "2",
            "--set",
            "rotate_max_degrees=25",
        ]
    )
    assert show_augment.main(args) == 0
    from PIL import Image

    width, height = Image.open(output).size
    assert width > 3 * 100 and height > 2 * 100
    assert "2 images x 2 samples" in capsys.readouterr().out
    assert list(output.parent.iterdir()) == [output]  # no temporary file left behind

    bad = parser.parse_args([str(tmp_path / "missing"), "--output", str(output)])
    assert show_augment.main(bad) == 2
    assert "no TFRecord files found" in capsys.readouterr().err
    bad = parser.parse_args([str(tmp_path), "--output", str(output), "--set", "spin=3"])
    assert show_augment.main(bad) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_our_horizontal_flip_is_model_gardens_flip(records):
    """The parser's own flip gives what Model Garden's flip functions give, at probability 0.5."""
    from official.vision.ops import preprocess_ops

    from tfmaskrcnn.dataloaders.parser import random_flip_decoded

    stock = maskrcnn_input.Parser(**PARSER_ARGS)  # no flip of its own
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True, regenerate_source_id=False)
    for record in records:
        data = decoder.decode(tf.constant(record))
        theirs = dict(
            data,
            image=preprocess_ops.horizontal_flip_image(data["image"]),
            groundtruth_boxes=preprocess_ops.horizontal_flip_boxes(data["groundtruth_boxes"]),
            groundtruth_instance_masks=preprocess_ops.horizontal_flip_masks(data["groundtruth_instance_masks"]),
        )
        ours = random_flip_decoded(data, prob=1.0)
        for key in ("image", "groundtruth_boxes", "groundtruth_instance_masks"):
            np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy(), err_msg=key)
        image, labels = stock._parse_train_data(ours)
        stock_image, stock_labels = stock._parse_train_data(theirs)
        np.testing.assert_array_equal(image.numpy(), stock_image.numpy())
        np.testing.assert_array_equal(labels["gt_masks"].numpy(), stock_labels["gt_masks"].numpy())
    # The parser flips about half of the examples, as Model Garden's does.
    parser = AugmentingParser(aug_rand_hflip=True, **PARSER_ARGS)
    data = decoder.decode(tf.constant(records[0]))
    flipped = [
        not np.array_equal(
            parser._parse_train_data(data)[1]["gt_boxes"].numpy(), stock._parse_train_data(data)[1]["gt_boxes"].numpy()
        )
        for _ in range(40)
    ]
    assert 8 <= sum(flipped) <= 32


def test_float_image_from_the_augmenter_reaches_the_model_like_the_stock_uint8_one(records):
    """An augmenter that returns the image as float in [0, 1] (what training asks for) must
    leave Model Garden's normalized image as it would be from the uint8 original."""
    stock = parse_all(maskrcnn_input.Parser(**PARSER_ARGS), records)
    # A colour op that changes nothing still takes the float path end to end.
    no_change = augment.AugmentationParams(brightness_prob=1.0, brightness_max_delta=0.0)
    augmenter = augment_presets.make_augmenter(no_change, unit_float_image=True)
    ours = parse_all(AugmentingParser(augmenter=augmenter, **PARSER_ARGS), records)
    for (stock_image, stock_labels), (image, labels) in zip(stock, ours):
        np.testing.assert_allclose(image, stock_image, atol=1e-5)
        np.testing.assert_array_equal(labels["gt_masks"], stock_labels["gt_masks"])
    # The same float path with an augmenter that does something: a horizontal flip must reach the
    # model, so the image is the stock one mirrored within the resized image (padding stays right/below).
    flip = augment_presets.make_augmenter(augment.AugmentationParams(hflip_prob=1.0), unit_float_image=True)
    flipped = parse_all(AugmentingParser(augmenter=flip, **PARSER_ARGS), records)
    for (stock_image, stock_labels), (image, labels) in zip(stock, flipped):
        np.testing.assert_array_equal(labels["image_info"], stock_labels["image_info"])
        height, width = np.round(labels["image_info"][0] * labels["image_info"][2]).astype(int)  # resized image
        np.testing.assert_allclose(image[:height, :width], stock_image[:height, :width][:, ::-1], atol=1e-4)
        if (stock_labels["gt_classes"] > 0).any():  # the example without instances is a plain background
            assert not np.allclose(image[:height, :width], stock_image[:height, :width], atol=1e-3)
