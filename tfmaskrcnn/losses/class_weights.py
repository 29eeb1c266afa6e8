"""Class weights for the classification loss: from per-class instance counts to a weight vector.

`compute_class_weights` returns K + 1 weights (index 0 is background, indices 1..K the
classes, as in Model Garden). Foreground weights are scaled so that their
instance-weighted mean is 1, i.e. sum_c n_c * w_c / sum_c n_c = 1: on the training set's
own class distribution the expected foreground loss is unchanged and only the share each
class gets moves. The background weight is set after this normalization (a separate knob:
about 75% of sampled RoIs are background). Pure numpy.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

SCHEMES = ("none", "inverse", "sqrt_inverse", "effective_number", "explicit")


def check_class_weights(weights: Sequence[float], num_classes: int, name: str = "class_weights") -> None:
    """Raises a ValueError saying the fix when `weights` does not fit `num_classes`.

    `num_classes` counts background, as Model Garden's config does (K classes -> K + 1).
    """
    count = len(weights)
    if count != num_classes:
        foreground = num_classes - 1
        if count == foreground:
            fix = "add the background weight first"
        elif count == num_classes + 1:
            fix = "num_classes already counts background: drop one entry or fix num_classes"
        else:
            fix = f"give {num_classes} weights: background first, then one per class"
        raise ValueError(
            f"{name} has {count} entries, num_classes is {num_classes} (background + {foreground} classes): {fix}"
        )
    array = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {list(weights)}")


def _raw_foreground_weights(counts: np.ndarray, scheme: str, beta: float) -> np.ndarray:
    """Unnormalized weights for classes with at least one instance (others: NaN)."""
    raw = np.full(counts.shape, np.nan)
    seen = counts > 0
    n = counts[seen]
    if scheme == "inverse":
        raw[seen] = 1.0 / n
    elif scheme == "sqrt_inverse":
        raw[seen] = 1.0 / np.sqrt(n)
    elif scheme == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1) for effective_number, got {beta}")
        # Cui et al. 2019: the effective number of samples is (1 - beta^n) / (1 - beta).
        raw[seen] = (1.0 - beta) / (1.0 - np.power(beta, n))
    return raw


def compute_class_weights(
    instance_counts: Sequence[int],
    scheme: str,
    beta: float = 0.999,
    background_weight: float = 1.0,
    max_ratio: Optional[float] = None,
    weights: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Per-class loss weights, length K + 1, index 0 background.

    Args:
      instance_counts: K non-crowd instance counts; entry i is class id i + 1.
      scheme: `none` (all 1), `inverse` (1/n), `sqrt_inverse` (1/sqrt(n)),
        `effective_number` ((1 - beta) / (1 - beta^n), Cui et al. 2019) or
        `explicit` (`weights` returned as given).
      beta: the effective-number hyper-parameter; 0.999 suits classes with hundreds
        to thousands of instances, 0.99 smaller ones (beta -> 1 tends to `inverse`,
        beta = 0 gives `none`).
      background_weight: weight of index 0, set after normalization.
      max_ratio: caps largest/smallest foreground weight; the largest weights are
        clipped down to `min * max_ratio`, then all are renormalized.
      weights: for `explicit` only: K weights (background_weight is put first) or
        K + 1 (used verbatim, background first). Not normalized: you meant them.

    Foreground weights of the computed schemes are normalized so that
    sum_c n_c w_c / sum_c n_c = 1 (see the module docstring). A class with no
    instance gets the largest weight of the others: it is the rarest class, and it
    adds nothing to the normalization sum because n_c = 0.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown class weighting scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    counts = np.asarray(instance_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"instance_counts must be a non-empty list of per-class counts, got {instance_counts!r}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"instance_counts must be >= 0, got {list(instance_counts)}")
    if background_weight < 0 or not np.isfinite(background_weight):
        raise ValueError(f"background_weight must be finite and >= 0, got {background_weight}")
    num_foreground = counts.size

    if scheme == "explicit":
        if weights is None:
            raise ValueError("scheme 'explicit' needs weights: one per class, or background first then one per class")
        if max_ratio is not None:
            raise ValueError("max_ratio applies to computed schemes; explicit weights are used as given")
        if len(weights) == num_foreground:
            full = [background_weight] + list(weights)
        elif len(weights) == num_foreground + 1:
            full = list(weights)
        else:
            raise ValueError(
                f"weights has {len(weights)} entries; expected {num_foreground} (one per class) "
                f"or {num_foreground + 1} (background first, then {num_foreground} classes)"
            )
        check_class_weights(full, num_foreground + 1, name="weights")
        return np.asarray(full, dtype=np.float64)
    if weights is not None:
        raise ValueError(f"weights are only read by scheme 'explicit', not {scheme!r}")

    if scheme == "none":
        foreground = np.ones(num_foreground)
    else:
        if counts.sum() == 0:
            raise ValueError(f"scheme {scheme!r} needs instance counts, but every class has 0 instances")
        foreground = _raw_foreground_weights(counts, scheme, beta)
        seen = counts > 0
        foreground[~seen] = np.max(foreground[seen])
        if max_ratio is not None:
            if not max_ratio >= 1.0:
                raise ValueError(f"max_ratio must be >= 1 (largest / smallest weight), got {max_ratio}")
            foreground = np.minimum(foreground, foreground.min() * max_ratio)
        foreground = foreground * counts.sum() / np.sum(counts * foreground)
    return np.concatenate([[float(background_weight)], foreground])
