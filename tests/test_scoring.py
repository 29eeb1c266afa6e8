"""Detection scores as each loss defines them (`tfmaskrcnn.losses.scoring`): numbers computed by hand
and with the references' formulas in numpy, through Model Garden's detection generator, and the
same scores from the task's model and from the export module's model (slow)."""

import numpy as np
import pytest
import tensorflow as tf

from tfmaskrcnn.losses import scoring

LOG3 = np.log(3.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _generator_scores(logits, scoring_name):
    """Scores of classes 1..K as Model Garden's generator produces them (no NMS: every RoI's scores)."""
    logits = np.asarray(logits, np.float32)
    batch, rois, num_classes = logits.shape
    generator = scoring.ScoringDetectionGenerator(
        scoring=scoring_name, apply_nms=False, use_sigmoid_probability=scoring.uses_sigmoid(scoring_name)
    )
    boxes = tf.zeros([batch, rois, num_classes * 4])
    anchors = tf.tile(tf.constant([[[0.0, 0.0, 10.0, 10.0]]]), [batch, rois, 1])
    out = generator(boxes, tf.constant(logits), anchors, tf.constant([[100.0, 100.0]] * batch))
    return out["decoded_box_scores"].numpy()


def test_eqlv2_scores_use_the_background_column_hand_computed():
    # Logits (z_0, z_1, z_2): (0, 0, log 3) -> σ = (1/2, 1/2, 3/4): scores (1/2 * 1/2, 3/4 * 1/2).
    # (log 3, 0, log 3): 1 - σ(log 3) = 1/4 -> (1/8, 3/16).
    logits = [[[0.0, 0.0, LOG3], [LOG3, 0.0, LOG3]]]
    expected = [[[1 / 4, 3 / 8], [1 / 8, 3 / 16]]]
    np.testing.assert_allclose(_generator_scores(logits, "sigmoid_objectness"), expected, rtol=1e-6)
    # Model Garden's own sigmoid scoring drops column 0: the background would be ignored.
    np.testing.assert_allclose(_generator_scores(logits, "sigmoid"), [[[1 / 2, 3 / 4], [1 / 2, 3 / 4]]], rtol=1e-6)


def test_eqlv2_scores_match_the_reference_formula_on_random_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (2, 7, 5)).astype(np.float32)
    logits[0, 0] = [12.0, -15.0, 9.0, 0.0, 20.0]  # saturated sigmoids stay exact
    z = logits.astype(np.float64)
    reference = _sigmoid(z[..., 1:]) * (1.0 - _sigmoid(z[..., :1]))  # EQLv2 test_with_obj=True
    got = _generator_scores(logits, "sigmoid_objectness")
    moderate = reference > 1e-4
    np.testing.assert_allclose(got[moderate], reference[moderate], rtol=2e-5)
    # TensorFlow's float32 sigmoid (Eigen's approximation, applied by Model Garden) is good to about
    # 1e-3 relative below 1e-5; the stock sigmoid scores have the same error there.
    np.testing.assert_allclose(got, reference, rtol=1e-3)
    np.testing.assert_allclose(
        scoring.class_scores(logits, "sigmoid_objectness").numpy()[..., 1:], reference, rtol=1e-3
    )


def _mmdetection_seesaw_activation(class_logits, objectness_logits):
    """mmdetection's SeesawLoss.get_activation on its K + 2 channels: softmax over the K classes
    times the positive objectness softmax; the last column is the negative objectness."""
    classes = np.exp(class_logits - class_logits.max(-1, keepdims=True))
    classes /= classes.sum(-1, keepdims=True)
    objectness = np.exp(objectness_logits - objectness_logits.max(-1, keepdims=True))
    objectness /= objectness.sum(-1, keepdims=True)
    return np.concatenate([classes * objectness[..., :1], objectness[..., 1:]], axis=-1)


def test_seesaw_scores_hand_computed_and_as_mmdetection():
    # (b, z_1, z_2) = (log 3, 0, log 3): σ(-b) = 1/4, softmax(0, log 3) = (1/4, 3/4) -> (1/16, 3/16).
    np.testing.assert_allclose(
        _generator_scores([[[LOG3, 0.0, LOG3]]], "softmax_objectness"), [[[1 / 16, 3 / 16]]], rtol=1e-6
    )
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (1, 9, 6)).astype(np.float32)
    z = logits.astype(np.float64)
    # Our column 0 is mmdetection's (positive, negative) objectness pair with the positive logit at 0.
    pair = np.stack([np.zeros_like(z[..., 0]), z[..., 0]], axis=-1)
    reference = _mmdetection_seesaw_activation(z[..., 1:], pair)
    np.testing.assert_allclose(_generator_scores(logits, "softmax_objectness"), reference[..., :-1], rtol=1e-5)
    full = scoring.class_scores(logits, "softmax_objectness").numpy()
    np.testing.assert_allclose(full[..., 1:], reference[..., :-1], rtol=1e-5)
    np.testing.assert_allclose(full[..., 0], reference[..., -1], rtol=1e-5)  # the background's score


def test_plain_scorings_leave_the_logits_to_model_garden():
    logits = tf.constant([[[0.3, -1.0, 2.0]]])
    for name in ("softmax", "sigmoid"):
        assert scoring.generator_logits(logits, name) is logits
    np.testing.assert_allclose(_generator_scores(logits.numpy(), "softmax"), tf.nn.softmax(logits)[..., 1:], rtol=1e-6)


def test_each_loss_has_its_scoring_and_a_wrong_activation_is_refused():
    assert scoring.scoring_of("eqlv2") == "sigmoid_objectness"
    assert scoring.scoring_of("seesaw") == "softmax_objectness"
    assert scoring.scoring_of("sigmoid_focal") == "sigmoid" and scoring.scoring_of("federated") == "sigmoid"
    assert scoring.scoring_of("softmax") == "softmax"
    with pytest.raises(ValueError, match="use_sigmoid_probability=True"):
        scoring.ScoringDetectionGenerator(scoring="sigmoid_objectness", use_sigmoid_probability=False)
    with pytest.raises(ValueError, match="unknown loss_type"):
        scoring.scoring_of("focal")


@pytest.mark.slow
def test_the_task_model_and_the_exported_model_score_with_the_background_column(shapes_records, tiny_experiment):
    """eqlv2: the task's model (training, evaluation, the detectors) and the export module's model (the
    SavedModel) both score σ(z_c)(1 − σ(z_0)): with the background bias at 3 no detection scores above
    1 − σ(3) ≈ 0.047, where Model Garden's sigmoid scoring would ignore it."""
    from official.core import task_factory

    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.serving.export_module import TfMaskRCNNDetectionModule
    from tfmaskrcnn.tasks import config_resolution

    params = tiny_experiment(shapes_records)
    params.task.class_balance.loss_type = "eqlv2"
    params.task.model.detection_generator.pre_nms_score_threshold = 0.0  # keep every detection
    config_resolution.resolve_config(params.task)
    ceiling = 1.0 / (1.0 + np.exp(3.0)) + 1e-6

    def confident_background(model):
        classifier = model.detection_head[0]._classifier  # pylint: disable=protected-access
        bias = classifier.bias.numpy()
        bias[0], bias[1:] = 3.0, 5.0  # class sigmoids near 1: the background column decides
        classifier.bias.assign(bias)
        kernel = classifier.kernel.numpy()
        kernel[:, 0] = 0.0  # z_0 = 3 for every RoI
        classifier.kernel.assign(kernel)

    task = task_factory.get_task(params.task)
    model = task.build_model()
    assert model.detection_generator.scoring == "sigmoid_objectness"
    confident_background(model)
    images = tf.random.stateless_uniform([1, 128, 128, 3], seed=[1, 2])
    ours = model(images, image_shape=tf.constant([[128.0, 128.0]]), training=False)
    assert int(ours["num_detections"][0]) > 0
    top = float(tf.reduce_max(ours["detection_scores"]))
    assert 0.04 < top <= ceiling, top

    module = TfMaskRCNNDetectionModule(
        params,
        label_map=LabelMap.load(params.task.label_map_path),
        label_map_file=params.task.label_map_path,
        batch_size=1,
        input_image_size=[128, 128],
        input_type="image_tensor",
    )
    assert module.model.detection_generator.scoring == "sigmoid_objectness"
    uint8_images = tf.cast(images * 255.0, tf.uint8)
    module.serve(uint8_images)  # builds the heads
    confident_background(module.model)
    served = module.serve(uint8_images)
    assert int(served["num_detections"][0]) > 0
    top = float(tf.reduce_max(served["detection_scores"]))
    assert 0.04 < top <= ceiling, top
