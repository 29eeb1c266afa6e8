"""The settings of `class_balance_experiment.py`: config overrides per setting, the staged ones, the mixes.

A setting of SETTINGS is a `--params_override`-style dict merged over `tfmaskrcnn_shapes_cpu` (at the
run's step budget); a setting of STAGED is a second stage applied to a trained run of its base setting
with the same seed. `experiment_params` in class_balance_experiment.py builds the config of each (the
cheap test `tests/test_class_balance_settings.py` resolves every one without training).
"""

BOTH = {
    "task": {
        "class_balance": {"weighting": {"scheme": "sqrt_inverse"}},
        "train_data": {"sampling": {"type": "repeat_factor"}},
    }
}
# Class-agnostic box regression and masks (Model Garden's switches): the regression and mask branches
# are shared by every class instead of one per class, which starves the rare ones (Zhu et al. ECCV 2024,
# "Rectify the Regression Bias in Long-Tailed Object Detection", whose remedy adds a class-agnostic
# branch beside the class-specific one; this is the plain sharing).
AGNOSTIC = {
    "task": {
        "model": {
            "detection_head": {"class_agnostic_bbox_pred": True},
            "mask_head": {"class_agnostic": True},
        }
    }
}


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


SETTINGS = {
    "reference": {},  # stock settings on the balanced training set (see _shares_for)
    "stock": {},
    "weights": {"task": {"class_balance": {"weighting": {"scheme": "sqrt_inverse"}}}},
    "sampling": {"task": {"train_data": {"sampling": {"type": "repeat_factor"}}}},
    "both": BOTH,  # the recipe shipped so far: sqrt-inverse weights + repeat-factor sampling
    "weights_inverse": {"task": {"class_balance": {"weighting": {"scheme": "inverse", "max_ratio": 10.0}}}},
    "augment_standard": {"task": {"train_data": {"parser": {"augmentation": {"preset": "standard"}}}}},
    "augment_light": {"task": {"train_data": {"parser": {"augmentation": {"preset": "light"}}}}},
    # Instance-level oversampling: rare-class objects pasted into other images (issue 13).
    "copy_paste": {"task": {"train_data": {"parser": {"copy_paste": {"enabled": True}}}}},
    # Long-tail losses of the box classifier (issue 14).
    "seesaw": {"task": {"class_balance": {"loss_type": "seesaw"}}},
    # The loss sets the scoring (config resolution): eqlv2 sigmoid(z_c)(1 - sigmoid(z_0)), federated
    # sigmoid, seesaw softmax over the classes times the objectness of column 0.
    "eqlv2": {"task": {"class_balance": {"loss_type": "eqlv2"}}},
    "federated": {"task": {"class_balance": {"loss_type": "federated"}}},  # |S| = 50 >= K = 5: sigmoid BCE
    # The federated loss drawing on 5 classes: |S| = ceil(0.4 K) = 2, the present classes first.
    "federated_sampled": {"task": {"class_balance": {"loss_type": "federated", "fed_loss_fraction": 0.4}}},
    # eqlv2 (the long-tail loss that kept the majority at 800 steps) on the repeat-factor stream.
    "eqlv2_sampling": {
        "task": {
            "class_balance": {"loss_type": "eqlv2"},
            "train_data": {"sampling": {"type": "repeat_factor"}},
        }
    },
    "copy_paste_sampling": {
        "task": {"train_data": {"parser": {"copy_paste": {"enabled": True}}, "sampling": {"type": "repeat_factor"}}}
    },
    # Issue 25's new levers. Shared (class-agnostic) box regression and masks, alone and on the recipe.
    "agnostic_heads": AGNOSTIC,
    "both_agnostic": merge(BOTH, AGNOSTIC),
    # Train-time logit adjustment / Balanced Softmax (Menon et al. 2021; Ren et al. 2020), tau 1: the
    # training counterpart of NorCal; scored with the plain softmax of the raw logits.
    "logit_adjusted": {"task": {"class_balance": {"loss_type": "logit_adjusted", "logit_adjustment_tau": 1.0}}},
    # The recipe's weights and sampling plus copy-paste: copy-paste + sampling lifted star and circle
    # the most but left squares 65% of the decisions; the class weights are what kept the recipe's even.
    "both_copy_paste": merge(BOTH, {"task": {"train_data": {"parser": {"copy_paste": {"enabled": True}}}}}),
}
# Second-stage cures of the box classifier (issue 14), applied to a trained run of the base
# setting with the same seed (trained first when its model dir is missing): `crt` re-trains the
# class-logit layer for the crt experiment's 300 steps on a class-aware stream; `norcal` fits
# NorCal's gamma on a balanced calibration split (not the validation split it is measured on),
# choosing gamma by mean per-class AP, or, for `*_norcal_balance`, by the operating point
# (`tfmaskrcnn calibrate --select balance`); `fracal` fits FRACAL's lambda the same way
# (`calibrate --method fracal`). setting -> (base setting, stage, calibrate's select).
STAGED = {
    "crt": ("stock", "crt", None),
    "norcal": ("stock", "norcal", "ap"),
    "norcal_balance": ("stock", "norcal", "balance"),
    "both_crt": ("both", "crt", None),
    "both_norcal": ("both", "norcal", "ap"),
    "both_norcal_balance": ("both", "norcal", "balance"),
    "both_norcal_instance": ("both", "norcal", "ap"),
    # Issue 25: FRACAL beside NorCal (select as their NorCal rows), and NorCal on copy-paste + sampling,
    # the combination docs/class_balance.md named next, by AP and by the operating point (the recipe's).
    "fracal": ("stock", "fracal", "ap"),
    "both_fracal": ("both", "fracal", "ap"),
    "copy_paste_sampling_norcal": ("copy_paste_sampling", "norcal", "ap"),
    "copy_paste_sampling_norcal_balance": ("copy_paste_sampling", "norcal", "balance"),
    "both_copy_paste_norcal_balance": ("both_copy_paste", "norcal", "balance"),
}
# The stages that run `tfmaskrcnn calibrate` (method = stage) instead of training.
CALIBRATION_STAGES = ("norcal", "fracal")
# What NorCal's N_c counts (`calibrate --counts`): images containing the class, the reference's and
# calibrate's default, except where named here. The norcal rows measured before the default
# became `image` counted instances, which `both_norcal_instance` measures now.
NORCAL_COUNTS = {"both_norcal_instance": "instance"}
# Training class shares; the first class is the majority. `five` resembles the mixes users
# report: one dominant class and minorities with 3-5% of the instances.
MIXES = {
    "three": (0.9, 0.07, 0.03),
    "five": (0.80, 0.08, 0.05, 0.04, 0.03),
}
