"""Train-time logit adjustment of the box classifier: Balanced Softmax / logit-adjusted cross-entropy.

Menon et al. (ICLR 2021, "Long-tail learning via logit adjustment") and Ren et al. (NeurIPS 2020,
"Balanced Meta-Softmax", whose Balanced Softmax is the case τ = 1) train with the softmax
cross-entropy of the *adjusted* logits z_c + τ·log π_c, π the training label prior, and predict with
the raw logits z. The model then learns z_c ≈ log p(c | x) − τ·log π_c + const: at τ = 1 the raw
logits score as if every class had been equally frequent. It is the training counterpart of the
post-hoc NorCal (`tfmaskrcnn.serving.calibration`), which divides the trained scores by N_c^γ.

Inference uses the raw logits with Model Garden's plain softmax scoring (`tfmaskrcnn.losses.scoring`:
`logit_adjusted` scores like `softmax`); the adjustment exists only inside the training loss.

The background column. A detector's box classifier has C = K + 1 columns, column 0 background,
and about three quarters of the sampled RoIs are background by the RoI sampler's design
(`roi_sampler.foreground_fraction`), not by a property of the data. The choices:

- adjust all C columns by the joint prior of the sampled RoIs (background by log bg_fraction,
  class c by log(fg_fraction · π_c)): Menon's recipe applied to K + 1 labels. The raw logits then
  score as if background were as likely as each single class, i.e. every class is raised against
  background by about bg_fraction / (fg_fraction · π_c), and confident false positives multiply at
  the operating point; the prior being corrected is the sampler's 25 / 75 split. Rejected.
- leave background unadjusted and adjust the foreground columns only. This is what detection work
  with these losses does: Balanced Softmax's own instance-segmentation code on LVIS
  (cunjunyu/BalancedMetaSoftmax-InstanceSeg, `balanced_softmax_loss`) adjusts the class logits of
  foreground RoIs only and leaves background RoIs to the plain loss, and NorCal (Pan et al. 2021)
  found that leaving the background score untouched is one of the two keys to calibrating a
  detector by class frequency (the other is renormalizing over the classes). Chosen.

With background unadjusted, a constant added to every foreground column is no longer free: it
moves the foreground / background trade-off. The adjustment here is

    a_0 = 0,    a_c = τ·log π_c + log Σ_j π_j^(1 − τ)    (c = 1..K),

π_c = N_c / Σ_j N_j the foreground prior from the training set's non-crowd instance counts (the
counts the class weights use; a class with none counts as 1). The constant is the one for which
Σ_c π_c·exp(−a_c) = 1: a foreground RoI drawn from the training distribution keeps, in expectation,
the foreground probability mass plain cross-entropy gives it, so the foreground / background
trade-off stays that of plain cross-entropy and only the balance between the classes changes. It
also makes the adjustment 0 on balanced data (π_c = 1 / K) and at τ = 0. At τ = 1 it is
a_c = log(K·π_c): Balanced Softmax relative to a uniform foreground prior, the target FRACAL's
frequency term uses too (`tfmaskrcnn.serving.fracal`).

Pure numpy; the loss itself is `tfmaskrcnn.losses.classification` with loss_type `logit_adjusted`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def foreground_prior(class_counts: Sequence[float]) -> np.ndarray:
    """π [K] over the foreground classes from C counts, background first (its entry is ignored);
    a count below 1 counts as 1."""
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"class counts must list background first, then one count per class; got {list(class_counts)}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"class counts must be finite and >= 0, got {list(class_counts)}")
    foreground = np.maximum(counts[1:], 1.0)
    return foreground / foreground.sum()


def logit_adjustment(class_counts: Sequence[float], tau: float = 1.0) -> np.ndarray:
    """The [C] adjustment added to the logits inside the training loss (module docstring): 0 for
    the background, τ·log π_c + log Σ_j π_j^(1 − τ) for the classes. float64."""
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"the logit adjustment's tau must be a finite number >= 0, got {tau}")
    prior = foreground_prior(class_counts)
    constant = np.log(np.sum(prior ** (1.0 - tau)))
    return np.concatenate([[0.0], tau * np.log(prior) + constant])
