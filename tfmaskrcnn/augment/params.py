"""The probabilities and magnitudes of every augmentation op: plain numbers, validated once.

Apart from the ops and the colour module so that both can take it without importing each other.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentationParams:
    """Probabilities and magnitudes of every op (plain numbers; 0 probability = off)."""

    hflip_prob: float = 0.0
    vflip_prob: float = 0.0
    rot90_prob: float = 0.0  # if applied, k in {1, 2, 3} quarter turns, uniformly
    scale_prob: float = 0.0
    scale_min: float = 1.0  # zoom factor range; >1 zooms in (crops), <1 zooms out (pads)
    scale_max: float = 1.0
    rotate_prob: float = 0.0
    rotate_max_degrees: float = 0.0
    shear_prob: float = 0.0
    shear_max_degrees: float = 0.0
    translate_prob: float = 0.0
    translate_max_fraction: float = 0.0  # of the image side
    cutout_prob: float = 0.0
    cutout_count: int = 1
    cutout_max_fraction: float = 0.0  # rectangle side as a fraction of the image side
    brightness_prob: float = 0.0
    brightness_max_delta: float = 0.0  # in [0, 1] intensity units
    contrast_prob: float = 0.0
    contrast_lower: float = 1.0
    contrast_upper: float = 1.0
    saturation_prob: float = 0.0
    saturation_lower: float = 1.0
    saturation_upper: float = 1.0
    hue_prob: float = 0.0
    hue_max_delta: float = 0.0  # <= 0.5
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma_max: float = 0.0  # pixels
    noise_prob: float = 0.0
    noise_std_max: float = 0.0  # in [0, 1] intensity units
    # Image value [0, 255] where a warp or cutout leaves no pixel: about the ImageNet mean
    # grey, which Model Garden's normalization maps near 0, like its own padding.
    fill_value: float = 115.0
    min_instance_pixels: int = 4  # an instance with fewer mask pixels is dropped
    min_box_side: float = 1.0  # pixels; an instance whose box is thinner is dropped

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.name.endswith("_prob") and not 0.0 <= getattr(self, field.name) <= 1.0:
                raise ValueError(f"{field.name}={getattr(self, field.name)} must be in [0, 1]")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not 0.0 <= self.hue_max_delta <= 0.5:
            raise ValueError(f"hue_max_delta={self.hue_max_delta} must be in [0, 0.5]")
        if not 0.0 <= self.contrast_lower <= self.contrast_upper:
            raise ValueError("need 0 <= contrast_lower <= contrast_upper")
        if not 0.0 <= self.saturation_lower <= self.saturation_upper:
            raise ValueError("need 0 <= saturation_lower <= saturation_upper")
        if not 0.0 <= self.cutout_max_fraction <= 1.0:
            raise ValueError(f"cutout_max_fraction={self.cutout_max_fraction} must be in [0, 1]")

    @property
    def is_identity(self) -> bool:
        return all(getattr(self, f.name) == 0.0 for f in dataclasses.fields(self) if f.name.endswith("_prob"))
