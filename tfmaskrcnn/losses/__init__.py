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

__all__ = [
    "SCHEMES",
    "LOSS_TYPES",
    "NORMALIZATIONS",
    "check_class_weights",
    "compute_class_weights",
    "weighted_classification_loss",
    "WeightedFastrcnnClassLoss",
]
