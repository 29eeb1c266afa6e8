"""How the box classifier's logits become detection scores, per classification loss.

A loss defines what its logits mean, so it defines the score read from them at inference:

| loss | scoring | score of class c ≥ 1 (z: the C = K + 1 logits, z_0 background) |
|---|---|---|
| softmax, logit_adjusted | `softmax` | softmax(z)_c (Model Garden's default) |
| sigmoid_focal, federated | `sigmoid` | σ(z_c) |
| eqlv2 | `sigmoid_objectness` | σ(z_c) · (1 − σ(z_0)): the EQLv2 reference's `test_with_obj=True` |
| seesaw | `softmax_objectness` | softmax(z_1..z_K)_c · σ(−z_0): mmdetection's Seesaw scores |

`logit_adjusted` trains with the softmax of z + a (Balanced Softmax, `tfmaskrcnn.losses.logit_adjustment`)
and scores with the raw logits: the adjustment exists only inside the training loss.

`sigmoid_objectness`: EQLv2 damps the negative gradients of the rare columns, background RoIs
included, so what suppresses rare-class false positives at test time is the background column;
Model Garden's sigmoid scoring keeps σ(z_c) and drops column 0.

`softmax_objectness`: mmdetection's Seesaw head has K class logits plus two objectness logits,
and scores softmax(classes) · softmax(objectness)_fg. Only the difference of the two objectness
logits matters, so one logit carries it: column 0 is the background logit b, P(foreground) =
σ(−b). Background RoIs train only b; the class logits z_1..z_K see only foreground RoIs (see
`tfmaskrcnn.losses.long_tail.seesaw_per_roi`).

Model Garden's `DetectionGenerator` applies softmax or sigmoid (`use_sigmoid_probability`) and
drops column 0. `generator_logits` rewrites the logits so that this activation yields exactly
the scores above; `ScoringDetectionGenerator` does that in front of Model Garden's generator, and
`install_scoring` puts it into a built model (training, evaluation, the detectors and export
all go through it, so served scores equal evaluated ones).

Imports TensorFlow and Model Garden (the package `tfmaskrcnn.losses` itself does not import it).
"""

from __future__ import annotations

import tensorflow as tf
from official.vision.modeling.layers import detection_generator

SCORINGS = ("softmax", "sigmoid", "sigmoid_objectness", "softmax_objectness")
SCORING_OF_LOSS = {
    "softmax": "softmax",
    "logit_adjusted": "softmax",  # trained on z + a, scored on the raw z
    "sigmoid_focal": "sigmoid",
    "federated": "sigmoid",
    "eqlv2": "sigmoid_objectness",
    "seesaw": "softmax_objectness",
}

FORMULAS = {
    "softmax": "softmax(z)_c",
    "sigmoid": "sigmoid(z_c)",
    "sigmoid_objectness": "sigmoid(z_c) * (1 - sigmoid(z_0))",
    "softmax_objectness": "softmax(z_1..z_K)_c * sigmoid(-z_0)",
}


def scoring_of(loss_type: str) -> str:
    """The scoring a classification loss trains for (see the module table)."""
    if loss_type not in SCORING_OF_LOSS:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(SCORING_OF_LOSS)}")
    return SCORING_OF_LOSS[loss_type]


def uses_sigmoid(scoring: str) -> bool:
    """Whether Model Garden's generator must apply a sigmoid (`use_sigmoid_probability`)."""
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    return scoring.startswith("sigmoid")


def class_scores(logits, scoring: str):
    """[..., C] scores: columns 1..K the detection score of each class, column 0 the background's
    (softmax(z)_0, σ(z_0) otherwise). Computed in float32."""
    z = tf.cast(logits, tf.float32)
    uses_sigmoid(scoring)  # checks the name
    if scoring == "softmax":
        return tf.nn.softmax(z, axis=-1)
    if scoring == "sigmoid":
        return tf.sigmoid(z)
    background = tf.sigmoid(z[..., :1])
    if scoring == "sigmoid_objectness":
        return tf.concat([background, tf.sigmoid(z[..., 1:]) * (1.0 - background)], axis=-1)
    return tf.concat([background, tf.nn.softmax(z[..., 1:], axis=-1) * (1.0 - background)], axis=-1)


def generator_logits(logits, scoring: str):
    """Logits whose Model Garden activation (sigmoid when `uses_sigmoid(scoring)`, else softmax over
    all C columns) equals `class_scores(logits, scoring)` on columns 1..K. Same dtype as `logits`."""
    if scoring in ("softmax", "sigmoid"):
        uses_sigmoid(scoring)
        return logits
    z = tf.cast(logits, tf.float32)
    log_foreground = tf.math.log_sigmoid(-z[..., :1])  # log(1 - σ(z_0))
    if scoring == "sigmoid_objectness":
        # logit(p) with log p = log σ(z_c) + log σ(−z_0), log(1 − p) = log(−expm1(log p)): stable.
        log_p = tf.math.log_sigmoid(z[..., 1:]) + log_foreground
        log_not_p = tf.math.log(tf.maximum(-tf.math.expm1(log_p), 1e-38))
        rewritten = tf.concat([z[..., :1], log_p - log_not_p], axis=-1)
    elif scoring == "softmax_objectness":
        # Log-probabilities: they sum to 1 over C, so Model Garden's softmax returns exp() of them.
        log_classes = tf.nn.log_softmax(z[..., 1:], axis=-1) + log_foreground
        rewritten = tf.concat([tf.math.log_sigmoid(z[..., :1]), log_classes], axis=-1)
    else:
        uses_sigmoid(scoring)  # raises for an unknown name
        raise AssertionError(scoring)
    return tf.cast(rewritten, logits.dtype)


class ScoringDetectionGenerator(detection_generator.DetectionGenerator):
    """Model Garden's detection generator fed with `generator_logits(raw_scores, scoring)`.

    `scoring` is one of SCORINGS; the other arguments are Model Garden's (`get_config()` of the
    stock generator), and `use_sigmoid_probability` must be the scoring's activation."""

    def __init__(self, scoring: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if uses_sigmoid(scoring) != bool(self._config_dict["use_sigmoid_probability"]):
            raise ValueError(
                f"scoring {scoring} needs use_sigmoid_probability={uses_sigmoid(scoring)}, "
                f"the generator has {self._config_dict['use_sigmoid_probability']}"
            )
        self.scoring = scoring

    def __call__(self, raw_boxes, raw_scores, *args, **kwargs):
        return super().__call__(raw_boxes, generator_logits(raw_scores, self.scoring), *args, **kwargs)

    def get_config(self):
        return dict(super().get_config(), scoring=self.scoring)


def install_scoring(model, scoring: str) -> None:
    """Puts the scoring into a Model Garden Mask R-CNN model (in place): its detection generator is
    replaced by one that rewrites the logits first. softmax / sigmoid need no rewrite (Model
    Garden's own generator, checked against `use_sigmoid_probability`)."""
    generator = getattr(model, "detection_generator", None)
    if generator is None:
        raise ValueError("install_scoring needs a Model Garden Mask R-CNN model (model.detection_generator)")
    config = {k: v for k, v in generator.get_config().items() if k != "scoring"}
    if uses_sigmoid(scoring) != bool(config["use_sigmoid_probability"]):
        raise ValueError(
            f"the loss's scoring is {scoring}, which needs task.model.detection_generator.use_sigmoid_probability="
            f"{str(uses_sigmoid(scoring)).lower()}; the model was built with {config['use_sigmoid_probability']}"
        )
    if scoring in ("softmax", "sigmoid") or getattr(generator, "scoring", None) == scoring:
        return
    model.detection_generator = ScoringDetectionGenerator(scoring=scoring, **config)
    model._config_dict["detection_generator"] = model.detection_generator  # pylint: disable=protected-access
