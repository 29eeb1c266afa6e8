"""NorCal's class counts N_c as the reference counts them: images containing the class
(tydpan/NorCal `_get_frequencies(by="image")`), with instances as the option; compared with
numbers computed here from the records and with the reference's formula in numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfmaskrcnn.data.stats import ClassStats
from tfmaskrcnn.serving import calibration as norcal


def _reference_norcal(logits, frequency, gamma):
    """The reference's softmax NorCal: class logits minus gamma * log(frequency), background
    untouched, softmax over all columns (written out here, not through the module)."""
    z = np.array(logits, np.float64)
    z[..., 1:] = z[..., 1:] - gamma * np.log(np.asarray(frequency, np.float64))
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_image_counts_are_the_default_and_differ_from_instances():
    # Class 1 in 2 images with 6 instances (a crowded class), class 2 in 3 images with 3.
    stats = ClassStats(names=["a", "b"], instance_counts=np.array([6, 3]), image_counts=np.array([2, 3]), num_images=4)
    assert norcal.class_counts_of(stats) == [2, 3]
    assert norcal.class_counts_of(stats, "instance") == [6, 3]
    with pytest.raises(ValueError, match="image .*or instance"):
        norcal.class_counts_of(stats, "boxes")
    logits = np.array([[0.3, 1.2, 0.9], [1.0, -0.5, 0.4]])
    for counted_by, counts in (("image", [2, 3]), ("instance", [6, 3])):
        calibration = norcal.Calibration(
            gamma=0.5, class_names=["a", "b"], class_counts=norcal.class_counts_of(stats, counted_by)
        )
        np.testing.assert_allclose(calibration.shift(), [0.0, -0.5 * np.log(counts[0]), -0.5 * np.log(counts[1])])
        np.testing.assert_allclose(
            norcal.norcal_probabilities(logits, calibration.class_counts, 0.5), _reference_norcal(logits, counts, 0.5)
        )
    # By image, class a (the crowded one) is divided by 2^0.5, not 6^0.5: a's score ranks higher.
    by_image = norcal.norcal_probabilities(logits, [2, 3], 0.5)
    by_instance = norcal.norcal_probabilities(logits, [6, 3], 0.5)
    assert by_image[0, 1] > by_instance[0, 1]


def test_calibration_json_says_what_it_counted():
    written = norcal.Calibration(gamma=0.5, class_names=["a"], class_counts=[2], counted_by="image")
    assert norcal.Calibration.from_dict(json.loads(written.to_json())).counted_by == "image"
    # A file from before the field counted instances.
    assert norcal.Calibration.from_dict({"gamma": 0.5, "class_names": ["a"], "class_counts": [2]}).counted_by == (
        "instance"
    )
    with pytest.raises(ValueError, match="counted_by 'boxes'"):
        norcal.Calibration.from_dict({"gamma": 0.5, "class_names": ["a"], "class_counts": [2], "counted_by": "boxes"})


def _counts_from_records(pattern: str, num_classes: int):
    """Images containing each class and its instances, non-crowd, decoded here from the records."""
    from tfmaskrcnn.data.records import decoded_examples

    images, instances = np.zeros(num_classes, int), np.zeros(num_classes, int)
    for _, _, example in decoded_examples(pattern, include_mask=False):
        classes = np.asarray(example["groundtruth_classes"])
        crowd = np.asarray(example.get("groundtruth_is_crowd", np.zeros_like(classes))).astype(bool)
        classes = classes[~crowd]
        np.add.at(instances, classes - 1, 1)
        images[np.unique(classes) - 1] += 1
    return images.tolist(), instances.tolist()


@pytest.mark.slow
def test_calibrate_divides_by_image_counts_unless_told_instances(untrained_model_dir, tmp_path, capsys):
    from tfmaskrcnn import cli

    directory, records = untrained_model_dir["model_dir"], untrained_model_dir["records"]
    images, instances = _counts_from_records(records["train"], 3)
    assert images != instances  # the fixture has classes with several instances per image
    written = {}
    for flag in ([], ["--counts", "instance"]):
        output = str(tmp_path / f"calibration_{flag[-1] if flag else 'default'}.json")  # the shared dir stays as it is
        args = ["calibrate", "--model_dir", directory, "--data", records["val"], "--gammas", "0.5", "--output", output]
        assert cli.main(args + flag) == 0
        with open(output) as f:
            written[flag[-1] if flag else "default"] = json.load(f)
    assert written["default"]["counted_by"] == "image" and written["default"]["class_counts"] == images
    assert written["instance"]["counted_by"] == "instance" and written["instance"]["class_counts"] == instances
    assert "class counts (images)" in capsys.readouterr().out
