"""A plain numpy forward pass of torchvision's MobileNetV2, straight from its state dict.

The reference the backbone import is checked against: it reads the torch tensors in torch's own
layout (no transposition shared with the importer) and follows torchvision's definition
(`torchvision.models.mobilenetv2`): ReLU6, batch norm with epsilon 1e-5, inverted residuals with
(expansion t, channels c, repeats n, first stride s) as below.

padding: `torchvision` pads every 3x3 conv by one pixel on each side (torch's `padding=1`);
`same` pads like TensorFlow's `same` (total k - 1 + (size - 1) % stride deficit, the extra pixel
at the bottom/right), which is what Model Garden's MobileNet does.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

# torchvision's inverted_residual_setting: t, c, n, s
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
EPSILON = 1e-5
# torchvision feature index -> Model Garden endpoint level (the blocks Model Garden marks is_output;
# level 6 is the last 1x1 conv to 1280 channels).
LEVELS = {3: "2", 6: "3", 13: "4", 17: "5", 18: "6"}


def _pad(x: np.ndarray, kernel: int, stride: int, padding: str) -> np.ndarray:
    if kernel == 1:
        return x
    pads = []
    for size in x.shape[1:3]:
        if padding == "torchvision":
            pads.append((kernel // 2, kernel // 2))
        else:
            out = -(-size // stride)
            total = max((out - 1) * stride + kernel - size, 0)
            pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[B, H', W', C, kh, kw] views of a padded input."""
    view = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(1, 2))
    return view[:, ::stride, ::stride]


def conv(x, weight, stride, padding):
    """Full conv, weight (O, I, kh, kw)."""
    kernel = weight.shape[-1]
    patches = _windows(_pad(x, kernel, stride, padding), kernel, stride)
    return np.einsum("bhwcij,ocij->bhwo", patches, weight, optimize=True)


def depthwise(x, weight, stride, padding):
    """Depthwise conv, weight (C, 1, kh, kw)."""
    kernel = weight.shape[-1]
    patches = _windows(_pad(x, kernel, stride, padding), kernel, stride)
    return np.einsum("bhwcij,cij->bhwc", patches, weight[:, 0], optimize=True)


def batch_norm(x, state, name):
    scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + EPSILON)
    return x * scale + (state[f"{name}.bias"] - state[f"{name}.running_mean"] * scale)


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def forward(state: Dict[str, np.ndarray], images: np.ndarray, padding: str = "torchvision") -> Dict[str, np.ndarray]:
    """{Model Garden level: feature map [B, h, w, C]} of preprocessed NHWC float images."""
    state = {k: v.astype(np.float64) for k, v in state.items() if v.dtype.kind == "f"}
    x = images.astype(np.float64)
    levels = {}
    x = relu6(batch_norm(conv(x, state["features.0.0.weight"], 2, padding), state, "features.0.1"))
    index, channels = 1, 32
    for t, c, n, s in SETTING:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            prefix, y, part = f"features.{index}.conv", x, 0
            if t != 1:
                y = relu6(batch_norm(conv(y, state[f"{prefix}.0.0.weight"], 1, padding), state, f"{prefix}.0.1"))
                part = 1
            y = depthwise(y, state[f"{prefix}.{part}.0.weight"], stride, padding)
            y = relu6(batch_norm(y, state, f"{prefix}.{part}.1"))
            y = conv(y, state[f"{prefix}.{part + 1}.weight"], 1, padding)
            y = batch_norm(y, state, f"{prefix}.{part + 2}")
            x = x + y if stride == 1 and channels == c else y
            channels = c
            if index in LEVELS:
                levels[LEVELS[index]] = x
            index += 1
    x = relu6(batch_norm(conv(x, state["features.18.0.weight"], 1, padding), state, "features.18.1"))
    levels[LEVELS[18]] = x
    return levels


def logits(state: Dict[str, np.ndarray], images: np.ndarray, padding: str = "torchvision") -> np.ndarray:
    pooled = forward(state, images, padding)["6"].mean(axis=(1, 2))
    return pooled @ state["classifier.1.weight"].astype(np.float64).T + state["classifier.1.bias"]
