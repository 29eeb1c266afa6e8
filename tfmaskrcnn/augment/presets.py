"""Augmentation presets and the config that selects them.

`AugmentationConfig` is a Model Garden `hyperparams.Config`, so it lives in the
experiment YAML (`task.train_data.parser.augmentation`) and takes `--params_override`.
A preset gives every op its probability and magnitude; any field left at None keeps the
preset's value, any other value overrides it:

    augmentation:
      preset: standard
      rotate_max_degrees: 5.0
      seed: 42

`albumentations: aug.yaml` runs a saved Albumentations pipeline (`A.save(pipeline,
"aug.yaml", data_format="yaml")`) in place of the in-graph ops, through
`albumentations_adapter.AlbumentationsAugmenter`; it takes `seed`, `min_instance_pixels`
and `min_box_side` from here and refuses a preset or op overrides beside it:

    augmentation:
      albumentations: configs/aug.yaml

Seeding inside tf.data: the ops are stateless (see `augment.py`), so the only question
is where the per-element seed [2] comes from. The augmenter draws it from a stateful
`tf.random.uniform` op created when the input function is traced:
* `seed: null` - the op is unseeded, every run differs (the usual training setting);
* `seed: S`   - the op carries seed S, so the sequence of element seeds is the same in
  every run. Elements get the same seeds in the same order only when the map runs
  sequentially (`deterministic=True` and one parallel call); with parallel map calls
  every element still gets its own stream but which element gets which depends on
  scheduling. For exact per-element reproducibility pass `seed=` yourself (e.g. from
  `Dataset.random(S)` zipped with the data): `augmenter(..., seed=element_seed)`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

from official.modeling import hyperparams

from tfmaskrcnn.augment import ops as augment

PRESETS: Dict[str, augment.AugmentationParams] = {
    "none": augment.AugmentationParams(),
    # Flip + mild colour: safe for any dataset, including ones where orientation matters
    # only left/right.
    "light": augment.AugmentationParams(
        hflip_prob=0.5,
        brightness_prob=0.5,
        brightness_max_delta=0.1,
        contrast_prob=0.5,
        contrast_lower=0.85,
        contrast_upper=1.15,
    ),
    # The recommended default against a one-class collapse from too little variety.
    # It adds what the parser does not: the horizontal flip (`parser.aug_rand_hflip`)
    # and scale jitter + crop (`aug_scale_min/max`, on the resized image) are on in every
    # tfmaskrcnn experiment, so `standard` does not do them again at full resolution (a
    # second random flip adds no variety; a second scale jitter would double the warp
    # work). About half of the images get one affine warp (rotation, shear, translation
    # composed), so the input pipeline keeps up with the stock one; docs/benchmarks.md.
    "standard": augment.AugmentationParams(
        rotate_prob=0.3,
        rotate_max_degrees=10.0,
        shear_prob=0.15,
        shear_max_degrees=5.0,
        translate_prob=0.2,
        translate_max_fraction=0.1,
        brightness_prob=0.5,
        brightness_max_delta=0.15,
        contrast_prob=0.5,
        contrast_lower=0.8,
        contrast_upper=1.2,
        saturation_prob=0.5,
        saturation_lower=0.8,
        saturation_upper=1.2,
        hue_prob=0.3,
        hue_max_delta=0.03,
        blur_prob=0.1,
        blur_sigma_max=1.0,
        noise_prob=0.1,
        noise_std_max=0.02,
    ),
    # For small datasets, and for aerial / microscopy images where any orientation is valid.
    "heavy": augment.AugmentationParams(
        hflip_prob=0.5,
        vflip_prob=0.5,
        rot90_prob=0.5,
        scale_prob=0.7,
        scale_min=0.6,
        scale_max=1.6,
        rotate_prob=0.5,
        rotate_max_degrees=20.0,
        shear_prob=0.3,
        shear_max_degrees=10.0,
        translate_prob=0.5,
        translate_max_fraction=0.15,
        cutout_prob=0.3,
        cutout_count=2,
        cutout_max_fraction=0.2,
        brightness_prob=0.7,
        brightness_max_delta=0.25,
        contrast_prob=0.7,
        contrast_lower=0.6,
        contrast_upper=1.4,
        saturation_prob=0.7,
        saturation_lower=0.5,
        saturation_upper=1.5,
        hue_prob=0.5,
        hue_max_delta=0.08,
        grayscale_prob=0.1,
        blur_prob=0.2,
        blur_sigma_max=1.5,
        noise_prob=0.2,
        noise_std_max=0.04,
    ),
}

_PARAM_NAMES = [f.name for f in dataclasses.fields(augment.AugmentationParams)]


@dataclasses.dataclass
class AugmentationConfig(hyperparams.Config):
    """Preset name plus per-op overrides (None keeps the preset's value)."""

    preset: str = "none"
    seed: Optional[int] = None
    # A pipeline saved with A.save / A.to_dict (YAML or JSON), run instead of the preset's ops.
    albumentations: Optional[str] = None
    hflip_prob: Optional[float] = None
    vflip_prob: Optional[float] = None
    rot90_prob: Optional[float] = None
    scale_prob: Optional[float] = None
    scale_min: Optional[float] = None
    scale_max: Optional[float] = None
    rotate_prob: Optional[float] = None
    rotate_max_degrees: Optional[float] = None
    shear_prob: Optional[float] = None
    shear_max_degrees: Optional[float] = None
    translate_prob: Optional[float] = None
    translate_max_fraction: Optional[float] = None
    cutout_prob: Optional[float] = None
    cutout_count: Optional[int] = None
    cutout_max_fraction: Optional[float] = None
    brightness_prob: Optional[float] = None
    brightness_max_delta: Optional[float] = None
    contrast_prob: Optional[float] = None
    contrast_lower: Optional[float] = None
    contrast_upper: Optional[float] = None
    saturation_prob: Optional[float] = None
    saturation_lower: Optional[float] = None
    saturation_upper: Optional[float] = None
    hue_prob: Optional[float] = None
    hue_max_delta: Optional[float] = None
    grayscale_prob: Optional[float] = None
    blur_prob: Optional[float] = None
    blur_sigma_max: Optional[float] = None
    noise_prob: Optional[float] = None
    noise_std_max: Optional[float] = None
    fill_value: Optional[float] = None
    min_instance_pixels: Optional[int] = None
    min_box_side: Optional[float] = None


def resolve_params(config: AugmentationConfig) -> augment.AugmentationParams:
    """The preset's params with the config's non-None fields laid over them."""
    if config.preset not in PRESETS:
        raise ValueError(f"augmentation.preset={config.preset!r} is unknown; choose one of {sorted(PRESETS)}")
    overrides = {name: getattr(config, name) for name in _PARAM_NAMES if getattr(config, name, None) is not None}
    try:
        return dataclasses.replace(PRESETS[config.preset], **overrides)
    except ValueError as err:
        raise ValueError(f"augmentation (preset {config.preset!r} with overrides {overrides}): {err}") from None


Augmenter = Callable[..., tuple]


def build_augmenter(config: Optional[AugmentationConfig], unit_float_image: bool = False) -> Optional[Augmenter]:
    """Returns `augmenter(image, boxes, masks, classes, extras, seed=None)`, or None for no-ops.

    None (rather than an identity function) lets the parser skip the step entirely, so
    preset `none` is the stock Model Garden pipeline (with its horizontal flip done by
    `AugmentingParser`, the same flip, faster). `unit_float_image`: see
    `augment.augment` (the training parser asks for it).
    """
    if config is None:
        return None
    if isinstance(config, dict):
        config = AugmentationConfig(config)
    if config.albumentations:
        return build_albumentations_augmenter(config)
    params = resolve_params(config)
    if params.is_identity:
        return None
    return make_augmenter(params, config.seed, unit_float_image)


def build_albumentations_augmenter(config: AugmentationConfig) -> Augmenter:
    """`augmentation.albumentations`: the saved pipeline, checked; refused beside a preset or op overrides."""
    from tfmaskrcnn.augment.albumentations_adapter import AlbumentationsAugmenter

    kept = {"preset", "seed", "albumentations", "min_instance_pixels", "min_box_side"}
    clashing = [name for name in _PARAM_NAMES if name not in kept and getattr(config, name, None) is not None]
    if config.preset != "none" or clashing:
        raise ValueError(
            f"augmentation.albumentations={config.albumentations!r} runs instead of the in-graph ops, but "
            f"augmentation also sets preset={config.preset!r}"
            + (f" and {', '.join(clashing)}" if clashing else "")
            + "; set preset: none and remove the op fields, or remove albumentations"
        )
    defaults = augment.AugmentationParams()
    return AlbumentationsAugmenter(
        config.albumentations,
        min_instance_pixels=defaults.min_instance_pixels
        if config.min_instance_pixels is None
        else config.min_instance_pixels,
        min_box_side=defaults.min_box_side if config.min_box_side is None else config.min_box_side,
        seed_base=config.seed,
    )


def make_augmenter(
    params: augment.AugmentationParams, base_seed: Optional[int] = None, unit_float_image: bool = False
) -> Augmenter:
    """Wraps `augment.augment` with a per-element seed drawn as described in the module doc."""

    def augmenter(image, boxes, masks, classes, extras=None, seed=None):
        if seed is None:
            import tensorflow as tf

            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32, seed=base_seed)
        return augment.augment(image, boxes, masks, classes, extras, seed, params, unit_float_image)

    augmenter.params = params  # for display and logs
    return augmenter
