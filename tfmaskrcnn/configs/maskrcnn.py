"""Experiment configs: Model Garden's Mask R-CNN configs, subclassed, plus our registered experiments.

Model Garden looks a task class up by the exact config class, so `TfMaskRCNNTask` below is a
subclass of its `MaskRCNNTask` config (registering the stock class twice is refused).

Fields that can be derived from the data (`model.num_classes`, the label map path, the
validation example count) are left at "unset" in the experiments and filled in by
`tfmaskrcnn.tasks.config_resolution.resolve_config` from the converter's `label_map.json` and
`dataset_stats.json`, before the config is written to `params.yaml`.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams, optimization
from official.vision.configs import backbones, common, decoders
from official.vision.configs import maskrcnn as mg

from tfmaskrcnn.augment.presets import AugmentationConfig


@dataclasses.dataclass
class ClassWeighting(hyperparams.Config):
    """How per-class weights of the classification loss are chosen.

    scheme: none | inverse | sqrt_inverse | effective_number | explicit.
    Automatic schemes are computed from the training set's instance counts when the
    task is built; the result is written back into `weights` (so params.yaml holds the
    exact numbers) and into `class_weights.md` in the model dir.
    """

    scheme: str = "none"
    beta: float = 0.999
    background_weight: float = 1.0
    max_ratio: Optional[float] = None
    weights: Optional[List[float]] = None


@dataclasses.dataclass
class ClassBalance(hyperparams.Config):
    """The classification loss of the box head.

    normalization: `weight_sum` divides by the summed weights of the sampled RoIs (with all
    weights 1 this is exactly Model Garden's loss); `mean` is Model Garden's unnormalized
    mean(w[t] * ce), under which weights also rescale the effective learning rate.
    loss_type: `softmax` (cross-entropy), `sigmoid_focal`, or the long-tail losses of
    `tfmaskrcnn.losses.long_tail`: `seesaw` (Wang et al. 2021), `eqlv2` (Tan et al. 2021),
    `federated` (Zhou et al. 2021). The long-tail losses take no class weights (weighting.scheme
    none); the loss sets the scoring (`model.detection_generator.use_sigmoid_probability`) when
    training starts. `fed_loss_class_counts` (image count per class, background first) is filled
    in from the training data at training start. `fed_loss_num_classes` is |S|, the classes in
    each step's federated loss (present ones plus negatives drawn by frequency^0.5), 50 as in the
    paper and detectron2 (50 of LVIS's 1203); at K <= 50 every class is in every step, which is
    sigmoid BCE. `fed_loss_fraction` (0 < x <= 1), when set, replaces it by ceil(x * K) at training
    start (the paper's 50 / 1203 is 0.042), so the loss samples on small label sets too.
    `logit_adjusted`: train-time logit adjustment / Balanced Softmax (Menon et al. 2021; Ren et al.
    2020): softmax cross-entropy of z + a with a_c = τ·log π_c + const on the classes and 0 on the
    background (`tfmaskrcnn.losses.logit_adjustment`), τ = `logit_adjustment_tau` (1: Balanced
    Softmax); detections are scored from the raw logits with the plain softmax. π comes from
    `logit_adjustment_counts` (non-crowd instance count per class, background first, the counts
    the class weights use), filled in from the training data at training start; it takes no
    class weights either. Defaults are the papers'.
    """

    weighting: ClassWeighting = dataclasses.field(default_factory=ClassWeighting)
    normalization: str = "weight_sum"
    loss_type: str = "softmax"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    seesaw_p: float = 0.8
    seesaw_q: float = 2.0
    eqlv2_gamma: float = 12.0
    eqlv2_mu: float = 0.8
    eqlv2_alpha: float = 4.0
    fed_loss_num_classes: int = 50
    fed_loss_fraction: Optional[float] = None
    fed_loss_freq_weight_power: float = 0.5
    fed_loss_seed: int = 0
    fed_loss_class_counts: Optional[List[float]] = None
    logit_adjustment_tau: float = 1.0
    logit_adjustment_counts: Optional[List[float]] = None


@dataclasses.dataclass
class Sampling(hyperparams.Config):
    """Image sampling of the training stream.

    type: none | repeat_factor (LVIS) | class_aware. `threshold` is LVIS's t; when unset it
    is chosen from the data (see `tfmaskrcnn.dataloaders.sampling.choose_threshold`) and written back,
    with the rule that chose it in `threshold_rule`. `repeat_sqrt`: r = max(1, sqrt(t / f)) (LVIS);
    false: max(1, t / f) (detectron2's REPEAT_SQRT=False). `max_repeat_factor` caps every factor
    (LVIS's largest is 10); null for no cap.
    """

    type: str = "none"
    threshold: Optional[float] = None
    threshold_rule: str = ""
    repeat_sqrt: bool = True
    max_repeat_factor: Optional[float] = 10.0
    seed: Optional[int] = None
    shuffle_buffer_size: int = 64


@dataclasses.dataclass
class CopyPasteConfig(hyperparams.Config):
    """Class-balanced copy-paste of instances from a bank read from the training records (train only).

    class_sampling: repeat_factor | inverse | uniform: the class of each pasted instance.
    scale_min/max: size relative to the instance's size in its own image. blend_sigma: Gaussian
    edge blending in pixels (0: hard). bank_size: instances held in memory (rare classes whole),
    each as a crop_size x crop_size crop. See `tfmaskrcnn.dataloaders.copy_paste`.
    """

    enabled: bool = False
    max_instances: int = 3
    class_sampling: str = "repeat_factor"
    scale_min: float = 0.5
    scale_max: float = 1.5
    blend_sigma: float = 1.0
    bank_size: int = 2000
    crop_size: int = 64
    seed: Optional[int] = None


@dataclasses.dataclass
class ClassifierRetraining(hyperparams.Config):
    """Decoupled classifier re-training (cRT, Kang et al. 2020): a second training stage.

    When `init_checkpoint` is set (a ckpt-N prefix or a training run's folder), the task restores
    every weight of the model from it, freezes everything except `trainable` (`logits`: the box
    head's class-logit layer; `box_head`: the whole box head, its batch norms still frozen) and
    trains with `sampling` (none | repeat_factor | class_aware) in place of
    `train_data.sampling.type`. `steps` is the length of the stage and must equal
    `trainer.train_steps` (the crt experiments check it). See `tfmaskrcnn.tasks.classifier_retraining`.
    `reinitialize_classifier` (the paper's cRT, default): the class-logit layer starts from a fresh
    initialization, not from the first stage's (Kang et al.; classifier-balancing's
    `stage1_weights: false`); false fine-tunes the first stage's classifier instead.
    """

    init_checkpoint: str = ""
    steps: int = 0
    sampling: str = "class_aware"
    trainable: str = "logits"
    reinitialize_classifier: bool = True


@dataclasses.dataclass
class Parser(mg.Parser):
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)
    copy_paste: CopyPasteConfig = dataclasses.field(default_factory=CopyPasteConfig)


@dataclasses.dataclass
class DataConfig(mg.DataConfig):
    parser: Parser = dataclasses.field(default_factory=Parser)
    sampling: Sampling = dataclasses.field(default_factory=Sampling)


@dataclasses.dataclass
class TfMaskRCNNTask(mg.MaskRCNNTask):
    """Model Garden's Mask R-CNN task config with a label map and class-balance settings.

    label_map_path: the converter's label_map.json; when empty, the one beside the training
    records is used. `model.num_classes` 0 means "background + the label map's classes".
    """

    label_map_path: str = ""
    train_data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(is_training=True))
    validation_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=False, drop_remainder=False)
    )
    class_balance: ClassBalance = dataclasses.field(default_factory=ClassBalance)
    classifier_retraining: ClassifierRetraining = dataclasses.field(default_factory=ClassifierRetraining)
    # Foreground accuracy, share of foreground RoIs called background and the predicted-class
    # histogram, logged while training: the earliest sign that the head collapses to one class.
    log_collapse_signals: bool = True


def _sgd(
    boundaries: List[int],
    values: List[float],
    clipnorm: Optional[float] = 10.0,
    warmup_steps: int = 0,
    warmup_learning_rate: float = 0.0,
):
    """SGD with momentum 0.9 on a stepwise schedule, after an optional linear warmup."""
    config = {
        "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9, "global_clipnorm": clipnorm}},
        "learning_rate": {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}},
    }
    if warmup_steps:
        config["warmup"] = {
            "type": "linear",
            "linear": {"warmup_steps": warmup_steps, "warmup_learning_rate": warmup_learning_rate},
        }
    return optimization.OptimizationConfig(config)


def _trainer(**fields) -> cfg.TrainerConfig:
    """The trainer settings every experiment keeps, plus its own `fields` (steps, intervals, optimizer).

    Issue 12: the best checkpoint by validation mask AP is kept (`tfmaskrcnn export --best`), and a
    NaN or a loss above the bound is retried from the last checkpoint (recovery_max_trials times)
    before the run stops.
    """
    kept = {
        "validation_steps": -1,
        "best_checkpoint_export_subdir": "best_ckpt",
        "best_checkpoint_eval_metric": "mask_AP",
        "best_checkpoint_metric_comp": "higher",
        "loss_upper_bound": 1000.0,
        "recovery_max_trials": 1,
    }
    return cfg.TrainerConfig(**{**kept, **fields})


def _restrictions() -> List[str]:
    return ["task.train_data.is_training != None", "task.validation_data.is_training != None"]


SHAPES_TRAIN_STEPS = 1200


def shapes_budget_override(train_steps: int) -> dict:
    """Trainer override giving `tfmaskrcnn_shapes_cpu` another step budget.

    The learning-rate schedule moves with it: a short low-rate start (50 steps, less for very
    short runs), then the peak rate until 80% of the budget, then a tenth of it.
    """
    warmup = min(50, max(1, train_steps // 4))
    decay = max(warmup + 1, int(train_steps * 0.8))
    return {
        "trainer": {
            "train_steps": train_steps,
            "validation_interval": train_steps,
            "optimizer_config": {"learning_rate": {"stepwise": {"boundaries": [warmup, decay]}}},
        }
    }


@exp_factory.register_config_factory("tfmaskrcnn_shapes_cpu")
def tfmaskrcnn_shapes_cpu() -> cfg.ExperimentConfig:
    """A tiny Mask R-CNN that trains on the 128 px shapes dataset on a laptop CPU in minutes.

    About 0.3-0.4 s per step on 2 cores, so 1200 steps take 6-8 minutes; mask AP on the
    balanced shapes validation split is reported in README. Only the data paths need to be given.
    """
    steps = SHAPES_TRAIN_STEPS
    model = mg.MaskRCNN(
        num_classes=0,
        input_size=[128, 128, 3],
        min_level=2,
        max_level=5,
        anchor=mg.Anchor(anchor_size=4.0),
        backbone=backbones.Backbone(type="resnet", resnet=backbones.ResNet(model_id=18)),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=64)),
        rpn_head=mg.RPNHead(num_filters=64),
        detection_head=mg.DetectionHead(num_convs=0, num_fcs=2, fc_dims=256),
        roi_generator=mg.ROIGenerator(
            num_proposals=200, test_num_proposals=200, pre_nms_top_k=1000, test_pre_nms_top_k=1000
        ),
        roi_sampler=mg.ROISampler(num_sampled_rois=128),
        mask_head=mg.MaskHead(num_convs=2, num_filters=64),
        mask_sampler=mg.MaskSampler(num_sampled_masks=32),
        # The default momentum 0.997 leaves the moving statistics near their init after a
        # few hundred steps, and evaluation then sees AP near 0.
        norm_activation=common.NormActivation(norm_momentum=0.9, norm_epsilon=1e-4, use_sync_bn=False),
    )
    parser = Parser(aug_rand_hflip=True, aug_scale_min=0.8, aug_scale_max=1.25)
    return cfg.ExperimentConfig(
        runtime=cfg.RuntimeConfig(distribution_strategy="mirrored", num_gpus=0, mixed_precision_dtype="float32"),
        task=TfMaskRCNNTask(
            model=model,
            init_checkpoint=None,
            losses=mg.Losses(l2_weight_decay=4e-5),
            train_data=DataConfig(
                is_training=True, global_batch_size=4, dtype="float32", parser=parser, shuffle_buffer_size=500
            ),
            validation_data=DataConfig(is_training=False, global_batch_size=4, dtype="float32", drop_remainder=False),
        ),
        trainer=_trainer(
            train_steps=steps,
            validation_interval=steps,
            steps_per_loop=50,
            summary_interval=50,
            checkpoint_interval=200,
            max_to_keep=2,
            optimizer_config=_sgd([50, int(steps * 0.8)], [0.004, 0.02, 0.002]),  # see shapes_budget_override
        ),
        restrictions=_restrictions(),
    )


CRT_STEPS = 300


@exp_factory.register_config_factory("tfmaskrcnn_shapes_cpu_crt")
def tfmaskrcnn_shapes_cpu_crt() -> cfg.ExperimentConfig:
    """cRT on a `tfmaskrcnn_shapes_cpu` run: restores it, retrains the class logits only for 300 steps
    with class-aware sampling. Give the first stage's folder:

        tfmaskrcnn train --experiment tfmaskrcnn_shapes_cpu_crt --mode train --model_dir runs/x_crt \\
            --params_override task.classifier_retraining.init_checkpoint=runs/x,task.train_data.input_path=...

    Another length: override `task.classifier_retraining.steps` and `trainer.train_steps` together.
    """
    params = tfmaskrcnn_shapes_cpu()
    steps = CRT_STEPS
    params.task.classifier_retraining = ClassifierRetraining(steps=steps, sampling="class_aware", trainable="logits")
    params.trainer.train_steps = steps
    params.trainer.validation_interval = steps
    params.trainer.checkpoint_interval = steps
    params.trainer.optimizer_config = _sgd([int(steps * 0.8)], [0.02, 0.002])
    return cfg.ExperimentConfig(
        runtime=params.runtime,
        task=params.task,
        trainer=params.trainer,
        restrictions=_restrictions() + ["task.classifier_retraining.steps == trainer.train_steps"],
    )


def _r50fpn(input_size: int) -> mg.MaskRCNN:
    return mg.MaskRCNN(
        num_classes=0,
        input_size=[input_size, input_size, 3],
        backbone=backbones.Backbone(type="resnet", resnet=backbones.ResNet(model_id=50)),
        norm_activation=common.NormActivation(norm_momentum=0.997, norm_epsilon=1e-4, use_sync_bn=True),
    )


# `runtime.num_gpus` of the GPU experiments: every GPU TensorFlow sees, resolved at training start
# (`tfmaskrcnn.tasks.runtime_resolution`), which refuses to fall back to the CPU when none is
# visible. Model Garden's own default, 0, builds a MirroredStrategy on the CPU without a word.
ALL_VISIBLE_GPUS = -1


def _r50fpn_experiment(
    batch_size: int, train_steps: int, mixed_precision: str, distribution: str, data_dtype: str
) -> cfg.ExperimentConfig:
    """mixed_precision takes Model Garden's names (float16 | bfloat16 | float32), not Keras'
    policy names: `mixed_float16` makes `performance.set_mixed_precision_policy` raise before
    the first step. Loss scaling is added by Model Garden for float16 only."""
    parser = Parser(aug_rand_hflip=True, aug_scale_min=0.8, aug_scale_max=1.25)
    base_lr = 0.02 * batch_size / 16  # the linear scaling rule from Goyal et al. (2017)
    return cfg.ExperimentConfig(
        runtime=cfg.RuntimeConfig(
            distribution_strategy=distribution,
            mixed_precision_dtype=mixed_precision,
            num_gpus=ALL_VISIBLE_GPUS if distribution == "mirrored" else 0,
        ),
        task=TfMaskRCNNTask(
            model=_r50fpn(1024),
            # No pretrained weights by default: no network access at run time. Point
            # init_checkpoint at an ImageNet ResNet-50 (init_checkpoint_modules: backbone).
            init_checkpoint=None,
            init_checkpoint_modules="backbone",
            losses=mg.Losses(l2_weight_decay=4e-5),
            train_data=DataConfig(is_training=True, global_batch_size=batch_size, dtype=data_dtype, parser=parser),
            validation_data=DataConfig(is_training=False, global_batch_size=8, dtype=data_dtype, drop_remainder=False),
        ),
        trainer=_trainer(
            train_steps=train_steps,
            validation_interval=2000,
            steps_per_loop=500,
            summary_interval=500,
            checkpoint_interval=2000,
            recovery_begin_steps=500,  # after the warmup
            recovery_max_trials=2,
            optimizer_config=_sgd(
                [int(train_steps * 0.75), int(train_steps * 0.9)],
                [base_lr, base_lr / 10, base_lr / 100],
                clipnorm=None,
                warmup_steps=500,
                warmup_learning_rate=base_lr / 30,
            ),
        ),
        restrictions=_restrictions(),
    )


@exp_factory.register_config_factory("tfmaskrcnn_r50fpn_gpu")
def tfmaskrcnn_r50fpn_gpu() -> cfg.ExperimentConfig:
    """ResNet-50 FPN at 1024 px on every visible GPU (MirroredStrategy), mixed float16.

    `runtime.num_gpus` is -1 (every visible GPU, resolved at training start); training stops when
    TensorFlow sees no GPU instead of running on the CPU. On the CPU on purpose:
    `--params_override runtime.num_gpus=0,runtime.mixed_precision_dtype=float32` (and float32 data).
    """
    return _r50fpn_experiment(
        batch_size=16, train_steps=90000, mixed_precision="float16", distribution="mirrored", data_dtype="float16"
    )


@exp_factory.register_config_factory("tfmaskrcnn_r50fpn_tpu")
def tfmaskrcnn_r50fpn_tpu() -> cfg.ExperimentConfig:
    """ResNet-50 FPN at 1024 px on Cloud TPU, bfloat16."""
    return _r50fpn_experiment(
        batch_size=64, train_steps=22500, mixed_precision="bfloat16", distribution="tpu", data_dtype="bfloat16"
    )


MOBILENETV2_CPU_TRAIN_STEPS = 3000
# torchvision's batch norm epsilon: the ImageNet weights imported by `tfmaskrcnn import-backbone`
# (`tfmaskrcnn.tasks.backbone_import`) were trained with it; Model Garden's default 1e-3 would
# shift every normalized activation of the imported backbone.
TORCHVISION_NORM_EPSILON = 1e-5


def mobilenetv2_cpu_budget_override(train_steps: int) -> dict:
    """Trainer override giving `tfmaskrcnn_mobilenetv2_cpu` another step budget, its schedule moving with it:
    linear warmup over the first 200 steps (a tenth of short runs), drops x0.1 at 75% and 90%."""
    warmup = min(200, max(1, train_steps // 10))
    return {
        "trainer": {
            "train_steps": train_steps,
            "validation_interval": train_steps,
            "optimizer_config": {
                "learning_rate": {"stepwise": {"boundaries": [int(train_steps * 0.75), int(train_steps * 0.9)]}},
                "warmup": {"linear": {"warmup_steps": warmup}},
            },
        }
    }


@exp_factory.register_config_factory("tfmaskrcnn_mobilenetv2_cpu")
def tfmaskrcnn_mobilenetv2_cpu() -> cfg.ExperimentConfig:
    """MobileNetV2-FPN Mask R-CNN at 384 px for fine-tuning on photos on a 2-core CPU, float32.

    Start from ImageNet: import torchvision's MobileNetV2 weights once
    (`tfmaskrcnn import-backbone --from torchvision --arch mobilenet_v2 mobilenet_v2-b0353104.pth
    --output imagenet_mnv2`), then `--params_override task.init_checkpoint=imagenet_mnv2`; only the
    backbone is restored (`init_checkpoint_modules: backbone`), `init_report.json` lists it.
    Without it the model trains from random weights.

    Sizes: photos are resized to 384 px on the long side; FPN levels 3-6 with anchors of
    3 x stride at two scales per octave (24 to 272 px) cover objects from about 20 px to the
    whole image. FPN, RPN and heads are narrowed (128 filters, 2 mask convs, 256 sampled RoIs,
    32 sampled masks) so that a step of batch 2 stays near a second on 2 cores.
    Batch norm: epsilon 1e-5 (torchvision's), momentum 0.97 (the moving statistics follow the
    new data within about a hundred steps, instead of a thousand at Model Garden's 0.997).
    """
    steps = MOBILENETV2_CPU_TRAIN_STEPS
    model = mg.MaskRCNN(
        num_classes=0,
        input_size=[384, 384, 3],
        min_level=3,
        max_level=6,
        anchor=mg.Anchor(num_scales=2, anchor_size=3.0),
        backbone=backbones.Backbone(type="mobilenet", mobilenet=backbones.MobileNet(model_id="MobileNetV2")),
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=128)),
        rpn_head=mg.RPNHead(num_filters=128),
        detection_head=mg.DetectionHead(num_convs=0, num_fcs=2, fc_dims=512),
        roi_generator=mg.ROIGenerator(
            num_proposals=500, test_num_proposals=300, pre_nms_top_k=2000, test_pre_nms_top_k=1000
        ),
        roi_sampler=mg.ROISampler(num_sampled_rois=256),
        mask_head=mg.MaskHead(num_convs=2, num_filters=128),
        mask_sampler=mg.MaskSampler(num_sampled_masks=32),
        norm_activation=common.NormActivation(
            norm_momentum=0.97, norm_epsilon=TORCHVISION_NORM_EPSILON, use_sync_bn=False
        ),
    )
    parser = Parser(aug_rand_hflip=True, aug_scale_min=0.8, aug_scale_max=1.25)
    params = cfg.ExperimentConfig(
        runtime=cfg.RuntimeConfig(distribution_strategy="mirrored", num_gpus=0, mixed_precision_dtype="float32"),
        task=TfMaskRCNNTask(
            model=model,
            init_checkpoint=None,
            init_checkpoint_modules="backbone",
            losses=mg.Losses(l2_weight_decay=4e-5),
            train_data=DataConfig(
                is_training=True, global_batch_size=2, dtype="float32", parser=parser, shuffle_buffer_size=200
            ),
            validation_data=DataConfig(is_training=False, global_batch_size=2, dtype="float32", drop_remainder=False),
        ),
        trainer=_trainer(
            train_steps=steps,
            validation_interval=steps,
            steps_per_loop=50,
            summary_interval=50,
            checkpoint_interval=500,
            max_to_keep=2,
            # SGD at 0.005 for batch 2: twice the linear-scaling rule's 0.02 x 2/16, as short fine-tuning
            # schedules use; see mobilenetv2_cpu_budget_override for the schedule.
            optimizer_config=_sgd(
                [int(steps * 0.75), int(steps * 0.9)],
                [0.005, 0.0005, 0.00005],
                warmup_steps=200,
                warmup_learning_rate=0.0005,
            ),
        ),
        restrictions=_restrictions(),
    )
    return params
