"""Losses of the box head's classifier and the class weights they take.

Importing this package does not import TensorFlow.
"""

from tfmaskrcnn.losses.class_weights import SCHEMES, check_class_weights, compute_class_weights
from tfmaskrcnn.losses.classification import (
    LOSS_TYPES,
    NORMALIZATIONS,
    WeightedFastrcnnClassLoss,
    weighted_classification_loss,
)
from tfmaskrcnn.losses.long_tail import (
    LONG_TAIL_LOSS_TYPES,
    EQLv2Loss,
    FederatedLoss,
    SeesawLoss,
    build_long_tail_loss,
)

__all__ = [
    "SCHEMES",
    "LOSS_TYPES",
    "NORMALIZATIONS",
    "check_class_weights",
    "compute_class_weights",
    "weighted_classification_loss",
    "WeightedFastrcnnClassLoss",
    "LONG_TAIL_LOSS_TYPES",
    "SeesawLoss",
    "EQLv2Loss",
    "FederatedLoss",
    "build_long_tail_loss",
]
