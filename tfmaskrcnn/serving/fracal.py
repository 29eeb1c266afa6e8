"""FRACAL, fractal calibration (Alexandridis et al., CVPR 2025): post-hoc, no training.

FRACAL combines a frequency logit adjustment with a per-class spatial term: classes whose objects
spread uniformly over the image plane (high fractal dimension Φ) are down-weighted against classes
that occur in few places. For a softmax box classifier (C = K + 1 columns, column 0 background):

    p_c ∝ softmax(z + w)_c / Φ_c^λ,   renormalized over all C columns,
    w_0 = 0, Φ_0 = 1 (background untouched);  w_c = −log10(K·f_c)  (c = 1..K),

f_c the class's training frequency (share of training images that contain it, by default). That is
the softmax of shifted logits, so FRACAL is a change of the class-logit bias like NorCal
(`tfmaskrcnn.serving.calibration`): b_c ← b_c + w_c − λ·ln Φ_c. Export, eval, predict and the
detectors apply it exactly as they apply NorCal.

The fractal dimension Φ_c, by box counting: the centres of the class's training boxes, in
coordinates normalized by the image size, are binned on G x G grids for G = 1..64; N_c(G) is the
number of cells holding at least one centre; Φ_c is the slope of the least-squares line of
log N_c(G) on log G over the grids with G² ≤ n_c (n_c the class's instance count). A class with
fewer than 4 instances, or whose slope is below 1, gets Φ = 1 (ln 1 = 0: no spatial term).

What is verified, and against what. The definition above follows the authors' released code,
github.com/kostas1515/FRACAL, read line by line: `mmdet/models/roi_heads/bbox_heads/fracal_bbox_head.py`
(`ConvFCFracalBBoxHead`: softmax branch `softmax(cls_score + wy)`, then `scores / fractal_weights **
fractal_l` with background weight 1.0, renormalized; `get_fracal_weights` with variant `base10`:
wy = −log10(f_c) + log10(1/K)), `stat_files/get_frequency.py` (`base10` = −log10 of the image
frequency; the `_obj` variants use instance shares), `stat_files/calculate_fractality.py`
(`box_dim`: grids 1..64, cells [i/G, (i + 1)/G), the fit over G² ≤ n_c, Φ = 1 below 4 instances or a
slope below 1), `stat_files/get_statistics.py` (centres normalized by image width and height), and
the released LVIS config (`variant='base10'`, `fractal_l=2`). The paper's own equations were not
read (only its abstract and third-party summaries, which agree: Φ by box counting of object
locations with a log-log line fit, classes down-weighted inversely to how uniformly they spread,
combined with a frequency adjustment); λ = 2 is the released config's value, not a value checked
against the paper's ablation. Differences here: a class without training images counts as 1
(the reference would divide by zero); crowd instances are left out of the centres and counts, as
everywhere in tfmaskrcnn; a centre exactly on the right or bottom edge falls in the last cell (the
reference drops it). Not implemented: the reference's sigmoid form σ(z)·σ(z + w + spatial term),
which is not a bias shift; calibrate refuses FRACAL for models not scored with the plain softmax.

Pure numpy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_GRID = 64  # the reference's `--dims 64`
MIN_INSTANCES = 4  # fewer: Φ = 1 (the reference's rule)
DEFAULT_LAMBDAS = (0.0, 1.0, 2.0, 3.0)  # λ tried by `calibrate --method fracal`; 2 is the released config's


def occupied_cells(x: np.ndarray, y: np.ndarray, grid: int) -> int:
    """Cells of a grid x grid partition of [0, 1]² holding at least one of the points (x, y)."""
    ix = np.clip(np.floor(np.asarray(x, np.float64) * grid), 0, grid - 1).astype(np.int64)
    iy = np.clip(np.floor(np.asarray(y, np.float64) * grid), 0, grid - 1).astype(np.int64)
    return int(np.unique(iy * grid + ix).size)


def box_counting_dimension(x: Sequence[float], y: Sequence[float], max_grid: int = MAX_GRID) -> float:
    """The raw box-counting slope of a point set in [0, 1]²: least squares of log N(G) on log G over
    G = 1..max_grid with G² ≤ the number of points (at least G = 1, 2). No clipping: a point ~0, a
    line ~1, a filled square ~2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if x.size < MIN_INSTANCES:
        raise ValueError(f"box counting needs at least {MIN_INSTANCES} points, got {x.size}")
    grids = np.arange(1, max_grid + 1)
    grids = grids[grids * grids <= x.size]
    counts = np.array([occupied_cells(x, y, int(g)) for g in grids], np.float64)
    slope, _ = np.polyfit(np.log(grids), np.log(counts), 1)
    return float(slope)


def fractal_dimensions(
    centres_x: Sequence[float],
    centres_y: Sequence[float],
    class_ids: Sequence[int],
    num_classes: int,
    max_grid: int = MAX_GRID,
) -> np.ndarray:
    """Φ [K] for classes 1..K from the training boxes' centres (normalized to [0, 1]) and class ids:
    the box-counting slope, 1 for a class with fewer than MIN_INSTANCES boxes or a slope below 1."""
    x, y = np.asarray(centres_x, np.float64), np.asarray(centres_y, np.float64)
    ids = np.asarray(class_ids, np.int64)
    if not (x.shape == y.shape == ids.shape):
        raise ValueError("centres_x, centres_y and class_ids must have the same length")
    dims = np.ones(num_classes, np.float64)
    for class_id in range(1, num_classes + 1):
        mine = ids == class_id
        if mine.sum() >= MIN_INSTANCES:
            dims[class_id - 1] = max(1.0, box_counting_dimension(x[mine], y[mine], max_grid))
    return dims


def frequency_term(class_counts: Sequence[float], total: float) -> np.ndarray:
    """w [K] = −log10(K·f_c), f_c = max(count, 1) / total (the reference's `base10` variant)."""
    counts = np.maximum(np.asarray(class_counts, np.float64), 1.0)
    if not total > 0:
        raise ValueError(f"FRACAL's frequency needs a positive total (training images or instances), got {total}")
    return -np.log10(counts.size * counts / float(total))


def logit_shift(class_counts: Sequence[float], total: float, dimensions: Sequence[float], lam: float) -> np.ndarray:
    """The bias change [K + 1] (background first, 0): w_c − λ·ln Φ_c."""
    dims = np.asarray(dimensions, np.float64)
    if dims.shape != (len(class_counts),) or np.any(dims <= 0) or not np.all(np.isfinite(dims)):
        raise ValueError(f"FRACAL needs one positive fractal dimension per class, got {list(dimensions)}")
    return np.concatenate([[0.0], frequency_term(class_counts, total) - float(lam) * np.log(dims)])


def fracal_probabilities(logits, class_counts, total, dimensions, lam):
    """The reference's order of operations, for checks: softmax(z + w), each class divided by Φ^λ
    (background by 1), renormalized. logits [..., K + 1]."""
    z = np.asarray(logits, np.float64)
    w = np.concatenate([[0.0], frequency_term(class_counts, total)])
    e = np.exp(z + w - np.max(z + w, axis=-1, keepdims=True))
    scores = e / e.sum(axis=-1, keepdims=True)
    scores = scores / np.concatenate([[1.0], np.asarray(dimensions, np.float64) ** lam])
    return scores / scores.sum(axis=-1, keepdims=True)
