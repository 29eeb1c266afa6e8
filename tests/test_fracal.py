"""FRACAL (`tfmaskrcnn calibrate --method fracal`): box counting, the calibrated scores, the file, and
where it is applied.

Fast: the box-counting dimension of hand-made point sets (a point ~0, a line ~1, a filled grid ~2),
the reference's per-class rules, FRACAL's scores against the authors' order of operations in numpy
(and by hand), the bias shift on Model Garden's real box head, the file's checks, the box centres
read from the records. Slow: `tfmaskrcnn calibrate --method fracal` end to end on the untrained tiny
model, whose calibration.json eval applies and export bakes in.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import calibrated_and_plain

from tfmaskrcnn.serving import calibration as norcal
from tfmaskrcnn.serving import fracal

# ---------------------------------------------------------------- box counting


def _grid(n):
    centres = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(centres, centres)
    return x.ravel(), y.ravel()


def test_box_counting_dimension_of_a_point_a_line_and_a_filled_grid():
    x, y = _grid(64)  # 4096 points filling the square: N(G) = G^2 on every grid
    assert fracal.box_counting_dimension(x, y) == pytest.approx(2.0, abs=1e-9)
    line = (np.arange(4096) + 0.5) / 4096  # N(G) = G
    assert fracal.box_counting_dimension(line, np.full(4096, 0.3)) == pytest.approx(1.0, abs=1e-9)
    assert fracal.box_counting_dimension(line, line) == pytest.approx(1.0, abs=1e-9)  # the diagonal
    assert fracal.box_counting_dimension(np.full(100, 0.3), np.full(100, 0.7)) == pytest.approx(0.0, abs=1e-9)
    # Four points fit G = 1, 2 only: the four quadrants give log 4 / log 2 = 2, three of them log 3 / log 2
    # (1.5849625..., the value of many 4-instance classes in the reference's LVIS table).
    assert fracal.box_counting_dimension([0.1, 0.9, 0.1, 0.9], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(2.0)
    assert fracal.box_counting_dimension([0.1, 0.9, 0.1, 0.2], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(np.log2(3))
    with pytest.raises(ValueError, match="at least 4 points"):
        fracal.box_counting_dimension([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])


def test_only_grids_with_at_most_as_many_cells_as_points_are_fitted():
    # 16 points on a 4 x 4 lattice: grids G = 1..4 (G^2 <= 16), all cells filled: slope exactly 2. Finer
    # grids (which would flatten the slope as points stop filling cells) are left out, as in the reference.
    x, y = _grid(4)
    assert fracal.box_counting_dimension(x, y) == pytest.approx(2.0, abs=1e-9)


def test_per_class_dimensions_follow_the_reference_rules():
    gx, gy = _grid(16)  # class 1: 256 points filling the square -> 2
    line = (np.arange(256) + 0.5) / 256  # class 2: a line -> 1
    x = np.concatenate([gx, line, np.full(50, 0.5), [0.1, 0.5, 0.9]])
    y = np.concatenate([gy, np.full(256, 0.2), np.full(50, 0.5), [0.1, 0.5, 0.9]])
    ids = np.concatenate([np.full(256, 1), np.full(256, 2), np.full(50, 3), np.full(3, 4)])
    dims = fracal.fractal_dimensions(x, y, ids, num_classes=5)
    # class 3 a point (slope 0, raised to 1), class 4 three boxes (< 4: 1), class 5 none (1).
    np.testing.assert_allclose(dims, [2.0, 1.0, 1.0, 1.0, 1.0], atol=1e-9)


# ---------------------------------------------------------------- the calibrated scores


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_scores_by_hand_and_as_the_reference_orders_them():
    # K = 2, image counts 50, 5 of 100 images: K f = 1, 0.1 -> w = (0, 1). Φ = (2, 1), λ = 1. Logits 0:
    # softmax(z + w) = [1, 1, e] / (2 + e); divided by [1, 2, 1] and renormalized: [1, 0.5, e] / (1.5 + e).
    e = np.e
    p = fracal.fracal_probabilities(np.zeros(3), [50, 5], 100, [2.0, 1.0], 1.0)
    np.testing.assert_allclose(p, np.array([1.0, 0.5, e]) / (1.5 + e), rtol=1e-12)
    shift = fracal.logit_shift([50, 5], 100, [2.0, 1.0], 1.0)
    np.testing.assert_allclose(shift, [0.0, -np.log(2.0), 1.0], atol=1e-12)
    np.testing.assert_allclose(_softmax(shift), p, rtol=1e-12)  # a bias shift gives the reference's scores

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (20, 5))
    counts, total, dims = [300, 40, 12, 3], 400, [1.9, 1.6, 1.2, 1.0]
    for lam in (0.0, 1.0, 2.0):
        np.testing.assert_allclose(
            _softmax(z + fracal.logit_shift(counts, total, dims, lam)),
            fracal.fracal_probabilities(z, counts, total, dims, lam),
            rtol=1e-10,
        )
    # The frequency term is the reference's base10 variant: -log10(f_c) + log10(1 / K).
    f = np.array(counts) / total
    np.testing.assert_allclose(fracal.frequency_term(counts, total), -np.log10(f) + np.log10(1 / 4), atol=1e-12)


class _Model:
    def __init__(self, head):
        self.detection_head = [head]


def test_the_bias_shift_of_the_real_box_head_gives_the_fracal_scores():
    import tensorflow as tf
    from official.vision.modeling.heads import instance_heads

    head = instance_heads.DetectionHead(num_classes=4, num_convs=0, num_fcs=1, fc_dims=16)
    features = tf.random.stateless_normal([1, 5, 7, 7, 8], seed=[3, 4])
    logits = head(features)[0].numpy()
    calibration = norcal.Calibration(
        gamma=2.0,
        class_names=["a", "b", "c"],
        class_counts=[80, 9, 2],
        counted_by="image",
        method="fracal",
        fractal_dimensions=[1.8, 1.3, 1.0],
        count_total=100.0,
    )
    norcal.apply_shift(_Model(head), calibration.shift())
    calibrated = head(features)[0].numpy()
    np.testing.assert_allclose(
        _softmax(calibrated.astype(np.float64)),
        fracal.fracal_probabilities(logits, [80, 9, 2], 100.0, [1.8, 1.3, 1.0], 2.0),
        atol=1e-6,
    )


def test_the_file_round_trips_and_refuses_what_fracal_does_not_define(tmp_path):
    calibration = norcal.Calibration(
        gamma=2.0,
        class_names=["a", "b"],
        class_counts=[10, 2],
        method="fracal",
        fractal_dimensions=[1.5, 1.0],
        count_total=12.0,
    )
    path = str(tmp_path / "calibration.json")
    norcal.save(calibration, path)
    assert norcal.load(path) == calibration and calibration.describe() == "FRACAL lambda 2"
    np.testing.assert_allclose(norcal.load(path).shift(), fracal.logit_shift([10, 2], 12.0, [1.5, 1.0], 2.0))
    data = json.loads(calibration.to_json())
    with pytest.raises(ValueError, match="one positive fractal dimension for each of the 2 classes"):
        norcal.Calibration.from_dict({**data, "fractal_dimensions": [1.5]})
    with pytest.raises(ValueError, match="count_total"):
        norcal.Calibration.from_dict({**data, "count_total": 0})
    with pytest.raises(ValueError, match="softmax scores"):
        norcal.Calibration.from_dict({**data, "variant": "sigmoid"})
    with pytest.raises(ValueError, match="method 'fracl'"):
        norcal.Calibration.from_dict({**data, "method": "fracl"})
    # Files written before FRACAL existed are NorCal.
    old = norcal.Calibration.from_dict({"gamma": 0.5, "class_names": ["a", "b"], "class_counts": [10, 2]})
    assert old.method == "norcal" and old.describe() == "NorCal gamma 0.5"


def test_calibrate_refuses_fracal_for_a_model_not_scored_with_the_softmax():
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401
    from tfmaskrcnn.cli.calibrate import fracal_statistics

    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.task.class_balance.loss_type = "eqlv2"
    with pytest.raises(ValueError, match="use --method norcal"):
        fracal_statistics(params, stats=None, counted_by="image")


def _centres_from_decoded(pattern):
    """Box centres and classes of every non-crowd object, from Model Garden's own decoder."""
    from tfmaskrcnn.data.records import decoded_examples

    xs, ys, ids = [], [], []
    for _, _, example in decoded_examples(pattern, include_mask=False):
        boxes = example["groundtruth_boxes"]  # normalized [ymin, xmin, ymax, xmax]
        kept = ~example["groundtruth_is_crowd"].astype(bool)
        xs.append(((boxes[:, 1] + boxes[:, 3]) / 2)[kept])
        ys.append(((boxes[:, 0] + boxes[:, 2]) / 2)[kept])
        ids.append(example["groundtruth_classes"][kept])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids).astype(np.int64)


def test_box_centres_of_the_records_are_the_decoded_boxes_centres(shapes_records):
    from tfmaskrcnn.data import records, spatial

    x, y, ids = spatial.box_centres(records.tfrecord_files(shapes_records["train"]))
    ex, ey, eids = _centres_from_decoded(shapes_records["train"])
    assert len(ids) > 20 and set(ids.tolist()) <= {1, 2, 3}
    np.testing.assert_array_equal(ids, eids)
    np.testing.assert_allclose(x, ex, atol=1e-6)
    np.testing.assert_allclose(y, ey, atol=1e-6)


# ---------------------------------------------------------------- end to end


def _reference_dimension(x, y):
    """Box counting written out with Python sets, the reference's rules (independent of fracal.py)."""
    if len(x) < 4:
        return 1.0
    grids, counts = [], []
    for g in range(1, 65):
        if g * g > len(x):
            break
        cells = {(min(int(a * g), g - 1), min(int(b * g), g - 1)) for a, b in zip(x, y)}
        grids.append(np.log(g))
        counts.append(np.log(len(cells)))
    slope = np.polyfit(grids, counts, 1)[0]
    return max(1.0, float(slope))


@pytest.mark.slow
def test_calibrate_fracal_end_to_end_eval_and_export_apply_it(untrained_model_dir, shapes_records, tmp_path, capsys):
    from tfmaskrcnn import cli
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export
    from tfmaskrcnn.serving.export import compare_detections, sample_images
    from tfmaskrcnn.tasks import config_resolution

    directory, val = untrained_model_dir["model_dir"], untrained_model_dir["records"]["val"]
    output = str(tmp_path / "calibration.json")
    args = ["--method", "fracal", "--lambdas", "0,2", "--train_data", shapes_records["train"], "--output", output]
    assert cli.main(["calibrate", "--model_dir", directory, "--data", val, *args]) == 0
    out = capsys.readouterr().out
    assert "FRACAL (softmax)" in out and "lambda" in out and "written to" in out
    with open(output) as f:
        written = json.load(f)
    assert written["method"] == "fracal" and [row["gamma"] for row in written["table"]] == [0.0, 2.0]
    # Φ per class from the training boxes, computed here independently; the image frequency's total.
    stats = config_resolution.load_training_stats(shapes_records["train"])
    x, y, ids = _centres_from_decoded(shapes_records["train"])
    expected = [_reference_dimension(x[ids == c], y[ids == c]) for c in (1, 2, 3)]
    np.testing.assert_allclose(written["fractal_dimensions"], expected, atol=1e-5)
    assert any(d > 1.0 for d in expected), expected  # the spatial term is exercised
    assert written["count_total"] == stats.num_images and written["class_counts"] == list(stats.image_counts)
    assert written["fractal_fit"]["boxes"] == [int((ids == c).sum()) for c in (1, 2, 3)]
    calibration = norcal.load(output)

    # --gammas is NorCal's: refused with FRACAL (and --lambdas with NorCal).
    assert cli.main(["calibrate", "--model_dir", directory, "--data", val, "--method", "fracal", "--gammas", "1"]) == 2
    assert "--lambdas" in capsys.readouterr().err

    # Eval of the model dir applies its calibration.json; export bakes it into the SavedModel.
    target = os.path.join(directory, norcal.CALIBRATION_FILENAME)
    norcal.save(calibration, target)
    try:
        inference.detections_from_model(model_dir=directory, data=val, progress=True)
        assert f"FRACAL calibration applied: lambda {calibration.gamma:g}" in capsys.readouterr().err
    finally:
        os.remove(target)
    params = inference.load_params(os.path.join(directory, "params.yaml"))
    images = sample_images(seed=6)
    export_dir = str(tmp_path / "fracal_export")
    export.export_model(
        params, inference.latest_checkpoint(directory), export_dir, verify_images=images[:1], calibration=calibration
    )
    saved = inference.SavedModelDetector(export_dir)
    assert saved.calibration == calibration
    with open(os.path.join(export_dir, export.REPORT_FILENAME)) as f:
        report = json.load(f)["calibration"]
    assert report["method"] == "fracal" and report["fractal_dimensions"] == calibration.fractal_dimensions
    # The shared in-memory detector holds the checkpoint's weights: calibrated, then put back.
    calibrated, plain = calibrated_and_plain(untrained_model_dir["detector"], calibration, images)
    for index, image in enumerate(images):
        compare_detections(calibrated[index], saved(image), f"image {index}")
    assert not np.allclose(np.sort(plain[0]["scores"]), np.sort(saved(images[0])["scores"]))
