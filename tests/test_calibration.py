"""NorCal calibration: the formula, the bias shift that implements it, the file, and where it is applied.

Fast tests check the math on hand-computed logits and on Model Garden's real box head layer.
The slow tests use one untrained tiny model dir (as tests/test_export.py does): γ = 0 leaves
every score unchanged; `tfmaskrcnn calibrate` writes calibration.json and eval picks it up; a
calibrated SavedModel gives the calibrated checkpoint's detections.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import calibrated_and_plain

from tfmaskrcnn.serving import calibration as norcal

# ---------------------------------------------------------------- the math


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_shift_is_minus_gamma_log_count_and_leaves_background():
    shift = norcal.logit_shift([100, 10, 1, 0], gamma=0.5)
    np.testing.assert_allclose(shift, [0.0, -0.5 * np.log(100), -0.5 * np.log(10), 0.0, 0.0])
    assert np.array_equal(norcal.logit_shift([100, 10, 1], gamma=0.0), np.zeros(4))


def test_formula_on_hand_computed_logits():
    # z = [bg 1.0, a 2.0, b 0.5, c 0.0], counts a 100, b 10, c 1, gamma 1:
    # exp(z) / [1, 100, 10, 1] = [e, e^2/100, e^0.5/10, 1] = [2.718282, 0.073891, 0.164872, 1.0],
    # sum 3.957045, so p = [0.686947, 0.018673, 0.041666, 0.252714].
    z = np.array([1.0, 2.0, 0.5, 0.0])
    p = norcal.norcal_probabilities(z, [100, 10, 1], gamma=1.0)
    np.testing.assert_allclose(p, [0.686947, 0.018673, 0.041666, 0.252714], atol=2e-6)
    # ... which is the softmax of the shifted logits, and gamma 0 is the plain softmax.
    np.testing.assert_allclose(_softmax(z + norcal.logit_shift([100, 10, 1], 1.0)), p, rtol=1e-12)
    np.testing.assert_allclose(norcal.norcal_probabilities(z, [100, 10, 1], 0.0), _softmax(z), rtol=1e-12)


def test_sigmoid_variant_divides_each_class_odds():
    z = np.array([0.3, 1.0, -0.5])
    p = norcal.norcal_probabilities(z, [4, 9], gamma=0.5, sigmoid=True)
    # class 1: odds e^1 / 4^0.5 = 1.359141 -> 0.576117; class 2: e^-0.5 / 3 = 0.202177 -> 0.168175
    np.testing.assert_allclose(p[1:], [0.576117, 0.168175], atol=2e-6)
    shifted = z + norcal.logit_shift([4, 9], 0.5)
    np.testing.assert_allclose(1 / (1 + np.exp(-shifted)), p, rtol=1e-12)


class _Model:
    def __init__(self, head):
        self.detection_head = [head]


def _detection_head(num_classes=4):
    import tensorflow as tf
    from official.vision.modeling.heads import instance_heads

    head = instance_heads.DetectionHead(num_classes=num_classes, num_convs=0, num_fcs=1, fc_dims=16)
    features = tf.random.stateless_normal([1, 5, 7, 7, 8], seed=[1, 2])
    head(features)
    # A trained-looking bias, so that the shift has something to add to.
    head._classifier.bias.assign(np.array([0.4, -0.2, 0.1, 0.3], np.float32))
    return head, features


def test_bias_shift_of_the_real_box_head_gives_the_formula():
    head, features = _detection_head()
    counts = [200, 20, 3]
    logits, _ = head(features)
    trained_bias = head._classifier.bias.numpy().copy()
    model = _Model(head)

    norcal.apply_shift(model, norcal.logit_shift(counts, 0.7))
    calibrated, _ = head(features)
    np.testing.assert_allclose(
        _softmax(calibrated.numpy().astype(np.float64)),
        norcal.norcal_probabilities(logits.numpy(), counts, 0.7),
        atol=1e-6,
    )
    # Another gamma replaces the shift (from the trained bias); gamma 0 gives it back bit for bit.
    norcal.apply_shift(model, norcal.logit_shift(counts, 1.5))
    np.testing.assert_allclose(head._classifier.bias.numpy(), trained_bias + norcal.logit_shift(counts, 1.5), atol=1e-6)
    norcal.apply_shift(model, norcal.logit_shift(counts, 0.0))
    assert np.array_equal(head._classifier.bias.numpy(), trained_bias)
    assert np.array_equal(head(features)[0].numpy(), logits.numpy())


def test_shift_needs_a_built_head_and_the_right_length():
    from official.vision.modeling.heads import instance_heads

    with pytest.raises(ValueError, match="run the model once"):
        norcal.apply_shift(_Model(instance_heads.DetectionHead(num_classes=4)), np.zeros(4))
    head, _ = _detection_head()
    with pytest.raises(ValueError, match="4 outputs, the calibration 3"):
        norcal.apply_shift(_Model(head), np.zeros(3))


def test_calibration_file_round_trip_and_checks(tmp_path):
    calibration = norcal.Calibration(gamma=0.5, class_names=["a", "b"], class_counts=[10, 2], table=[{"gamma": 0.5}])
    path = str(tmp_path / "calibration.json")
    norcal.save(calibration, path)
    assert norcal.load(path) == calibration
    assert norcal.find(str(tmp_path)) == calibration and norcal.find(str(tmp_path / "none")) is None
    with pytest.raises(ValueError, match="re-run `tfmaskrcnn calibrate`"):
        norcal.check_classes(calibration, ["b", "a"], "model")
    with pytest.raises(ValueError, match="1 class counts for 2 classes"):
        norcal.Calibration.from_dict({"gamma": 1.0, "class_names": ["a", "b"], "class_counts": [3]})


def _metrics(predicted, gt, ap):
    names = ["big", "rare"]
    return {
        "score_threshold": 0.5,
        "overall": {"bbox": {"AP": 0.4}, "segm": {"AP": 0.3}},
        "per_class": {
            n: {"class": n, "predicted": p, "gt_instances": g, "mask_AP": a}
            for n, p, g, a in zip(names, predicted, gt, ap)
        },
        "alarm": {"verdict": "ok"},
    }


def test_table_row_has_the_operating_point_and_gamma_choice_prefers_small():
    row = norcal.table_row(0.5, _metrics([30, 10], [20, 20], [0.6, 0.2]))
    assert row["mean_per_class_AP"] == 0.4
    point = row["operating_point"]
    assert point["per_class"]["big"] == {"detection_share": 0.75, "gt_share": 0.5, "ratio": 1.5}
    assert point["max_share_ratio"] == 1.5 and point["confident_detections"] == 40 and point["alarm"] == "ok"
    table = [
        {"gamma": 0.0, "mean_per_class_AP": 0.30},
        {"gamma": 0.5, "mean_per_class_AP": 0.35},
        {"gamma": 1.0, "mean_per_class_AP": 0.35},
    ]
    assert norcal.choose_gamma(table) == 0.5


def _row(gamma, mean_ap, max_ratio, confident=40):
    point = {"confident_detections": confident, "max_share_ratio": max_ratio}
    return {"gamma": gamma, "mean_per_class_AP": mean_ap, "operating_point": point}


def test_balance_selection_keeps_the_gamma_that_over_predicts_least_not_the_best_ap():
    # γ = 0.5 has the best AP but sends 2.4x its share to one class (the collapse moved, as
    # measured on the 5-class mix); balance takes γ = 0.25, the best AP of the fair ones.
    table = [
        _row(0.0, 0.30, 2.50),
        _row(0.25, 0.33, 1.31),
        _row(0.5, 0.36, 2.40),
        _row(0.75, 0.31, 1.28),
        _row(1.0, 0.20, 0.50, confident=3),  # nearly mute: its ratio is noise, it never competes
        _row(1.5, 0.10, None, confident=0),  # nothing confident: never "balanced"
    ]
    assert norcal.choose_gamma(table, "ap") == 0.5
    assert norcal.choose_gamma(table, "balance") == 0.25  # 1.31 is within 0.05 of 1.28, better AP
    table[1] = _row(0.25, 0.33, 1.40)
    assert norcal.choose_gamma(table, "balance") == 0.75
    with pytest.raises(ValueError, match="no γ gave a confident detection"):
        norcal.choose_gamma([_row(0.0, 0.3, None, confident=0)], "balance")
    with pytest.raises(ValueError, match="expected one of"):
        norcal.choose_gamma(table, "recall")


# ---------------------------------------------------------------- with a tiny model


@pytest.fixture(scope="module")
def model_dir(untrained_model_dir, tmp_path_factory):
    """The session's untrained model dir (conftest.py, shared with the export tests); exports go
    under this module's own folder."""
    return {**untrained_model_dir, "root": tmp_path_factory.mktemp("calibration")}


def _calibration(model_dir, gamma):
    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.serving.detector import load_params
    from tfmaskrcnn.tasks import config_resolution

    params = load_params(os.path.join(model_dir, "params.yaml"))
    stats = config_resolution.load_training_stats(params.task.train_data.input_path)
    names = LabelMap.load(params.task.label_map_path).names
    return norcal.Calibration(
        gamma=gamma, class_names=list(names), class_counts=[int(c) for c in stats.instance_counts]
    )


@pytest.mark.slow
def test_gamma_zero_leaves_every_score_unchanged_and_gamma_changes_them(model_dir):
    from tfmaskrcnn.serving.export import sample_images

    detector = model_dir["detector"]  # shared: its calibration is put back to none at the end
    images = sample_images(seed=4)
    plain = [detector(image) for image in images]
    try:
        detector.calibrate(_calibration(model_dir["model_dir"], 0.0))
        for image, expected in zip(images, plain):
            got = detector(image)
            for key in ("scores", "classes", "boxes", "masks"):
                assert np.array_equal(got[key], expected[key]), key
        detector.calibrate(_calibration(model_dir["model_dir"], 1.0))
        assert not np.array_equal(detector(images[0])["scores"], plain[0]["scores"])
    finally:
        detector.calibrate(None)
    assert np.array_equal(detector(images[0])["scores"], plain[0]["scores"])


@pytest.mark.slow
def test_calibrate_writes_calibration_json_and_eval_applies_it(model_dir, capsys):
    from tfmaskrcnn import cli
    from tfmaskrcnn.data.records import decoded_examples
    from tfmaskrcnn.serving import detector as inference

    directory, val = model_dir["model_dir"], model_dir["records"]["val"]
    assert cli.main(["calibrate", "--model_dir", directory, "--data", val, "--gammas", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "written to" in out and "max det/gt share" in out
    with open(os.path.join(directory, norcal.CALIBRATION_FILENAME)) as f:
        written = json.load(f)
    assert [row["gamma"] for row in written["table"]] == [0.0, 1.0]
    # --select ap (the default) keeps the γ of the best mean per-class AP in the table it wrote,
    # the smaller one on a tie (within 1e-4).
    aps = {row["gamma"]: row["mean_per_class_AP"] for row in written["table"]}
    assert all(ap is not None for ap in aps.values()), aps
    assert written["gamma"] == min(g for g, ap in aps.items() if ap >= max(aps.values()) - 1e-4), aps
    assert written["variant"] == "softmax"
    assert set(written["table"][0]["operating_point"]["per_class"]) == set(written["class_names"])
    assert len(written["class_counts"]) == len(written["class_names"]) == 3
    assert written["criterion"].startswith("select=ap")

    # --select balance keeps the γ of the smallest over-prediction (threshold 0: the untrained
    # model's scores are low, and every detection then counts).
    args = ["--gammas", "0,1", "--select", "balance", "--score_threshold", "0"]
    assert cli.main(["calibrate", "--model_dir", directory, "--data", val, *args]) == 0
    with open(os.path.join(directory, norcal.CALIBRATION_FILENAME)) as f:
        balanced = json.load(f)
    assert balanced["criterion"].startswith("select=balance")
    ratios = {row["gamma"]: row["operating_point"]["max_share_ratio"] for row in balanced["table"]}
    assert ratios[balanced["gamma"]] <= min(ratios.values()) + norcal.BALANCE_TOLERANCE

    # Eval of the model dir (the path of `tfmaskrcnn eval --model_dir`) applies whatever calibration.json says.
    norcal.save(_calibration(directory, 1.0), os.path.join(directory, norcal.CALIBRATION_FILENAME))
    try:
        results = inference.detections_from_model(model_dir=directory, data=val, progress=True)
        assert "NorCal calibration applied: gamma 1" in capsys.readouterr().err
        first = next(r for r in results)
        image_results = [r for r in results if r["image_id"] == first["image_id"]]
        for _, _, example in decoded_examples(val, include_mask=False, include_image=True):
            if int(example["source_id"]) == first["image_id"]:
                image = example["image"]
                break
        (calibrated,), (plain,) = calibrated_and_plain(model_dir["detector"], _calibration(directory, 1.0), [image])
        np.testing.assert_allclose(
            sorted(r["score"] for r in image_results), sorted(calibrated["scores"]), atol=6e-6
        )  # COCO results keep 5 decimals
        assert not np.allclose(sorted(plain["scores"]), sorted(calibrated["scores"]))
    finally:
        os.remove(os.path.join(directory, norcal.CALIBRATION_FILENAME))


@pytest.mark.slow
def test_calibrated_savedmodel_equals_calibrated_checkpoint(model_dir):
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export
    from tfmaskrcnn.serving.export import compare_detections, sample_images

    directory = model_dir["model_dir"]
    calibration = _calibration(directory, 1.0)
    export_dir = str(model_dir["root"] / "calibrated")
    params = inference.load_params(os.path.join(directory, "params.yaml"))
    images = sample_images(seed=5)
    export.export_model(
        params, inference.latest_checkpoint(directory), export_dir, verify_images=images[:1], calibration=calibration
    )
    saved = inference.SavedModelDetector(export_dir)
    assert saved.calibration == calibration
    with open(os.path.join(export_dir, export.REPORT_FILENAME)) as f:
        assert json.load(f)["calibration"]["gamma"] == 1.0
    in_process, plain = calibrated_and_plain(model_dir["detector"], calibration, images)
    for index, image in enumerate(images):
        got = saved(image)
        compare_detections(in_process[index], got, f"image {index}")
        assert len(got["scores"]) > 0
    assert not np.allclose(np.sort(plain[0]["scores"]), np.sort(saved(images[0])["scores"]))
