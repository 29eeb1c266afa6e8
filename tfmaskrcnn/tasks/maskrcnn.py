"""The Mask R-CNN task: Model Garden's, with a label map, class balance and per-class evaluation.

What it changes, and nothing else:
- the config must come resolved (label map, num_classes, class weights, sampling threshold;
  see `tfmaskrcnn.tasks.config_resolution`): the task only checks it and reads the label map,
  so export and inference never need the training data;
- training inputs go through our augmenting parser and an optional image sampler
  (Model Garden's `build_inputs` passes no `sample_fn`);
- the box head's classification loss is the weighted loss of `tfmaskrcnn.losses.classification`
  (identical to Model Garden's with all weights 1; or its logit-adjusted form) or a long-tail loss of
  `tfmaskrcnn.losses.long_tail`, whose running statistics the model carries (checkpointed);
- collapse signals are logged while training;
- evaluation runs the evaluator of `tfmaskrcnn eval` (per-class COCO AP keyed by class name,
  precision/recall per class and the collapse alarm; `tfmaskrcnn.evaluation.model_garden`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import tensorflow as tf
import tf_keras
from absl import logging
from official.common import dataset_fn as dataset_fn_lib
from official.core import task_factory
from official.vision.dataloaders import (
    input_reader,
    tf_example_decoder,
    tf_example_label_map_decoder,
)
from official.vision.tasks import maskrcnn as mg_task

from tfmaskrcnn import losses as losses_lib
from tfmaskrcnn.augment import presets as augment_presets
from tfmaskrcnn.configs import maskrcnn as configs
from tfmaskrcnn.dataloaders import input_reader as reader_lib
from tfmaskrcnn.dataloaders import parser as parser_lib
from tfmaskrcnn.dataloaders import sampling
from tfmaskrcnn.diagnostics import training_signals
from tfmaskrcnn.losses import logit_adjustment, scoring
from tfmaskrcnn.tasks import classifier_retraining, model_garden_hooks
from tfmaskrcnn.tasks import config_resolution as experiment

COLLAPSE_METRICS = ("fg_accuracy", "fg_predicted_background")


@task_factory.register_task_cls(configs.TfMaskRCNNTask)
class TfMaskRCNNTask(mg_task.MaskRCNNTask):
    """Model Garden's MaskRCNNTask with our data, loss and evaluation additions."""

    def __init__(self, params: configs.TfMaskRCNNTask, logging_dir: Optional[str] = None, name: Optional[str] = None):
        try:
            self.label_map = experiment.check_resolved(params)
        except experiment.UnresolvedConfigError as unresolved:
            # Model Garden's own trainer (official/vision/train.py with our experiments) builds
            # the task from an unresolved config: resolving here once keeps that run working.
            # Export and the detectors call check_resolved before building a task, so they
            # fail with the fix instead of reaching this (and the training data).
            logging.warning(
                "The task config is not resolved (%s). Resolving it against the training data now; "
                "params.yaml written by this trainer will not record the resolved values: "
                "start training with `tfmaskrcnn train` to record them.",
                unresolved,
            )
            self.label_map = experiment.resolve_config(params)
        classifier_retraining.check_config(params)
        # The loss, metric and parser overrides below are private Model Garden methods: refuse a
        # Model Garden that no longer has or calls them, rather than train with its stock loss.
        model_garden_hooks.check_hooks()
        self.hook_calls = model_garden_hooks.HookCalls()
        super().__init__(params, logging_dir=logging_dir, name=name)

    # ------------------------------------------------------------ init checkpoint
    def initialize(self, model: tf_keras.Model):
        """Loads `init_checkpoint` by object path and shape (`tfmaskrcnn.tasks.checkpoint_init`):
        the class-dependent layers are re-initialized when the class count differs, and
        init_report.json in the model dir lists what was restored. Model Garden's trainer calls
        this only on a fresh start (no checkpoint in the model dir yet); a resumed run restores
        its own checkpoint instead."""
        if self._restore_first_stage(model):
            return
        if not self.task_config.init_checkpoint:
            return
        from tfmaskrcnn.tasks import checkpoint_init  # pylint: disable=g-import-not-at-top

        checkpoint_init.initialize_from_checkpoint(
            model,
            self.task_config.init_checkpoint,
            modules=self.task_config.init_checkpoint_modules,
            report_dir=self.logging_dir,
        )

    # ------------------------------------------------ classifier re-training (cRT)
    def _restore_first_stage(self, model: tf_keras.Model) -> bool:
        """A cRT stage (`task.classifier_retraining.init_checkpoint`) starts from every weight of the first,
        the class-logit layer re-initialized (`reinitialize_classifier`, the paper's cRT)."""
        spec = self.task_config.classifier_retraining
        if not classifier_retraining.enabled(spec):
            return False
        path, fresh = classifier_retraining.restore_first_stage(model, spec)
        logging.info("Classifier re-training: all weights restored from %s; re-initialized: %s", path, fresh or "none")
        return True

    def _freeze_for_retraining(self, model: tf_keras.Model) -> None:
        """In a cRT stage only the class logits (or the box head) train; batch-norm statistics stay frozen."""
        spec = self.task_config.classifier_retraining
        if classifier_retraining.enabled(spec):
            kept = classifier_retraining.freeze_except(
                model, classifier_retraining.retrained_layers(model, spec.trainable)
            )
            logging.info("Classifier re-training: only %s train (%s)", ", ".join(kept), spec.trainable)

    # ---------------------------------------------------------------- inputs
    def _build_decoder(self, params):
        decoder_cfg = params.decoder.get()
        common = dict(
            include_mask=self.task_config.model.include_mask,
            regenerate_source_id=decoder_cfg.regenerate_source_id,
            mask_binarize_threshold=decoder_cfg.mask_binarize_threshold,
        )
        if params.decoder.type == "label_map_decoder":
            return tf_example_label_map_decoder.TfExampleDecoderLabelMap(label_map=decoder_cfg.label_map, **common)
        return tf_example_decoder.TfExampleDecoder(**common)

    def _build_parser(self, params) -> parser_lib.AugmentingParser:
        model, parser = self.task_config.model, params.parser
        augmenter = None
        if params.is_training:
            # A float image in [0, 1] goes into Model Garden's normalize_image as it is, saving
            # a round trip through uint8; its own AutoAugment / RandAugment want uint8.
            augmenter = augment_presets.build_augmenter(
                parser.augmentation, unit_float_image=not (parser.aug_type and parser.aug_type.type)
            )
        return parser_lib.AugmentingParser(
            augmenter=augmenter,
            copy_paster=self._build_copy_paster(params) if params.is_training else None,
            output_size=model.input_size[:2],
            min_level=model.min_level,
            max_level=model.max_level,
            num_scales=model.anchor.num_scales,
            aspect_ratios=model.anchor.aspect_ratios,
            anchor_size=model.anchor.anchor_size,
            rpn_match_threshold=parser.rpn_match_threshold,
            rpn_unmatched_threshold=parser.rpn_unmatched_threshold,
            rpn_batch_size_per_im=parser.rpn_batch_size_per_im,
            rpn_fg_fraction=parser.rpn_fg_fraction,
            aug_rand_hflip=parser.aug_rand_hflip,
            aug_rand_vflip=parser.aug_rand_vflip,
            aug_scale_min=parser.aug_scale_min,
            aug_scale_max=parser.aug_scale_max,
            aug_type=parser.aug_type,
            skip_crowd_during_training=parser.skip_crowd_during_training,
            max_num_instances=parser.max_num_instances,
            include_mask=model.include_mask,
            outer_boxes_scale=model.outer_boxes_scale,
            mask_crop_size=parser.mask_crop_size,
            dtype=params.dtype,
        )

    def _build_copy_paster(self, params):
        """Class-balanced copy-paste (train only): reads the instance bank from the training records
        once per process, so it runs in `build_inputs`, never when the task is built."""
        spec = params.parser.copy_paste
        if not spec.enabled:
            return None
        from tfmaskrcnn.data import records  # pylint: disable=g-import-not-at-top
        from tfmaskrcnn.dataloaders import copy_paste  # pylint: disable=g-import-not-at-top

        if not self.task_config.model.include_mask:
            raise ValueError("task.train_data.parser.copy_paste needs masks: set task.model.include_mask: true")
        paths = params.input_path if isinstance(params.input_path, (list, tuple)) else [params.input_path]
        sampling_spec = getattr(params, "sampling", None)
        return copy_paste.build_copy_paster(
            spec,
            records.tfrecord_files(",".join(paths)),
            max_total_instances=params.parser.max_num_instances,
            threshold=sampling_spec.threshold if sampling_spec is not None else None,
            num_classes=self.label_map.num_classes,
        )

    def _build_sample_fn(self, params, input_context=None):
        """The training image sampler, as `(record_sampler, sample_fn)` with at most one set.

        `record_sampler` (for `SamplingInputReader`) draws on the serialized records before
        decoding; `sample_fn` (Model Garden's, on decoded dicts) only for the label-map decoder,
        whose records carry class names instead of ids. Reads class statistics of the training
        data, so it runs only in `build_inputs` of a training stream, never when the task is built."""
        spec = classifier_retraining.sampling_spec(
            self.task_config.classifier_retraining, getattr(params, "sampling", None), params.is_training
        )
        if not params.is_training or spec is None or spec.type == "none":
            return None, None
        seed = spec.seed
        if seed is not None and input_context is not None:
            seed += input_context.input_pipeline_id  # each host draws its own stream
        stats = experiment.load_training_stats(params.input_path)
        num_classes = self.label_map.num_classes
        on = "decoded" if params.decoder.type == "label_map_decoder" else "records"
        if spec.type == "class_aware":
            # Only classes present in the data: a class with no image would never yield.
            present = stats.present_class_ids()
            if on == "decoded":
                return None, sampling.make_class_aware_sample_fn(num_classes, seed=seed, class_ids=present)

            def class_aware(shard: reader_lib.Shard):
                class_ids = present
                if shard.kind == "records":  # a fixed shard of this host: check it has every class
                    in_shard = set(sampling.shard_class_ids(shard.records(), num_classes))
                    absent = [c for c in present if c not in in_shard]
                    if absent:
                        logging.warning(
                            "Class-aware sampling: input pipeline %d of %d has no image of classes %s in its "
                            "shard; sampling the other classes only (write more TFRecord files than workers, "
                            "so each reads whole files, or use repeat_factor sampling).",
                            shard.pipeline_id,
                            shard.num_pipelines,
                            [f"{c} ({self.label_map.name(c)})" for c in absent],
                        )
                    class_ids = [c for c in present if c in in_shard]
                    if not class_ids:
                        raise ValueError(
                            f"class-aware sampling: input pipeline {shard.pipeline_id} of {shard.num_pipelines} "
                            "has no labelled instance in its shard"
                        )
                return sampling.make_class_aware_sample_fn(num_classes, seed=seed, class_ids=class_ids, on=on)

            return class_aware, None
        class_repeat = sampling.repeat_factors(
            stats.image_frequency(), spec.threshold, sqrt=spec.repeat_sqrt, max_repeat=spec.max_repeat_factor
        )
        repeat_fn = sampling.make_repeat_factor_sample_fn(
            class_repeat, seed=seed, shuffle_buffer=spec.shuffle_buffer_size, on=on
        )
        if on == "decoded":
            return None, repeat_fn
        return (lambda shard: repeat_fn), None

    def build_inputs(
        self,
        params,
        input_context: Optional[tf.distribute.InputContext] = None,
        dataset_fn: Optional[dataset_fn_lib.PossibleDatasetType] = None,
    ):
        """Model Garden's input pipeline with our parser and an optional image sampler, which draws
        on the serialized records before the decoder (`tfmaskrcnn.dataloaders.input_reader`)."""
        record_sampler, sample_fn = self._build_sample_fn(params, input_context)
        reader = reader_lib.SamplingInputReader(
            params,
            record_sampler=record_sampler,
            dataset_fn=dataset_fn or dataset_fn_lib.pick_dataset_fn(params.file_type),
            decoder_fn=self._build_decoder(params).decode,
            combine_fn=input_reader.create_combine_fn(params),
            sample_fn=sample_fn,
            parser_fn=self._build_parser(params).parse_fn(params.is_training),
        )
        return reader.read(input_context=input_context)

    # ---------------------------------------------------------------- losses
    def build_model(self):
        """Model Garden's model scored as its loss defines (`tfmaskrcnn.losses.scoring`: eqlv2 and
        seesaw read the background column into the class scores); a stateful long-tail loss
        (seesaw, eqlv2, federated) is attached to it as `class_loss_state`, so that its running
        statistics checkpoint with the model."""
        model = super().build_model()
        scoring.install_scoring(model, scoring.scoring_of(self.task_config.class_balance.loss_type))
        self._freeze_for_retraining(model)
        stages = self._long_tail_losses()
        if stages:
            model.class_loss_state = tf.Module(name="class_loss_state")
            model.class_loss_state.stages = [stage.state for stage in stages]
        return model

    def _long_tail_losses(self):
        """One stateful loss per box head (cascade heads each have their own statistics), built
        once per task; [] for the stateless losses."""
        balance = self.task_config.class_balance
        if balance.loss_type not in losses_lib.LONG_TAIL_LOSS_TYPES:
            return []
        if getattr(self, "_long_tail_stages", None) is None:
            cascade = self.task_config.model.roi_sampler.cascade_iou_thresholds or []
            self._long_tail_stages = [
                losses_lib.build_long_tail_loss(
                    balance.loss_type,
                    self.task_config.model.num_classes,
                    seesaw_p=balance.seesaw_p,
                    seesaw_q=balance.seesaw_q,
                    eqlv2_gamma=balance.eqlv2_gamma,
                    eqlv2_mu=balance.eqlv2_mu,
                    eqlv2_alpha=balance.eqlv2_alpha,
                    fed_loss_class_counts=balance.fed_loss_class_counts,
                    fed_loss_num_classes=balance.fed_loss_num_classes,
                    fed_loss_freq_weight_power=balance.fed_loss_freq_weight_power,
                    fed_loss_seed=balance.fed_loss_seed + stage,
                    name=f"{balance.loss_type}_{stage}",
                )
                for stage in range(1 + len(cascade))
            ]
        return self._long_tail_stages

    def _classification_loss(self, stage: int = 0):
        balance = self.task_config.class_balance
        if balance.loss_type in losses_lib.LONG_TAIL_LOSS_TYPES:
            return self._long_tail_losses()[stage]
        weights = balance.weighting.weights or [1.0] * self.task_config.model.num_classes
        adjustment = None
        if balance.loss_type == "logit_adjusted":  # Balanced Softmax: z + a in the loss, raw z scored
            adjustment = logit_adjustment.logit_adjustment(
                balance.logit_adjustment_counts, balance.logit_adjustment_tau
            )
        return losses_lib.WeightedFastrcnnClassLoss(
            class_weights=weights,
            normalization=balance.normalization,
            loss_type=balance.loss_type,
            focal_alpha=balance.focal_alpha,
            focal_gamma=balance.focal_gamma,
            logit_adjustment=adjustment,
        )

    def _build_frcnn_losses(self, outputs: Mapping[str, Any], labels: Mapping[str, Any]):
        """Model Garden's box loss; our classification loss (weighted, or a long-tail loss with one
        state per head), averaged over cascade heads."""
        self.hook_calls.record("_build_frcnn_losses")
        _, frcnn_box_loss = super()._build_frcnn_losses(outputs, labels)
        cascade = self.task_config.model.roi_sampler.cascade_iou_thresholds
        suffixes = [""] + [f"_{i}" for i in range(1, 1 + len(cascade or []))]
        cls_loss = tf.add_n(
            [
                self._classification_loss(stage)(outputs["class_outputs" + s], outputs["class_targets" + s])
                for stage, s in enumerate(suffixes)
            ]
        ) / len(suffixes)
        return cls_loss, frcnn_box_loss

    def build_losses(self, outputs, labels, aux_losses=None):
        result = super().build_losses(outputs, labels, aux_losses)
        if self.task_config.log_collapse_signals and "class_outputs" in outputs:
            # Returned with the losses so that Model Garden's train_step feeds them to the
            # metrics of the same name; they do not enter total_loss.
            # On the scores the loss defines: argmax of the raw logits means nothing for seesaw's
            # objectness column.
            scores = scoring.class_scores(
                outputs["class_outputs"], scoring.scoring_of(self.task_config.class_balance.loss_type)
            )
            signals = training_signals.collapse_signals(scores, outputs["class_targets"])
            result["fg_accuracy"] = signals["foreground_accuracy"]
            result["fg_predicted_background"] = signals["foreground_as_background"]
            histogram = tf.cast(signals["predicted_class_histogram"], tf.float32)
            shares = tf.math.divide_no_nan(histogram, tf.reduce_sum(histogram))
            for class_id in range(1, self.label_map.num_classes + 1):
                result[self._share_metric_name(class_id)] = shares[class_id]
        return result

    def _share_metric_name(self, class_id: int) -> str:
        return f"fg_predicted_share/{self.label_map.name(class_id)}"

    def train_step(self, inputs, model, optimizer, metrics=None):
        """Model Garden's train step; then a check that it reached our classification loss (under
        tf.function this runs when the first step is traced), so that a Model Garden that stops calling
        `_build_frcnn_losses` stops training instead of training with its plain cross-entropy."""
        logs = super().train_step(inputs, model, optimizer, metrics=metrics)
        self.hook_calls.require("_build_frcnn_losses", "MaskRCNNTask.train_step")
        return logs

    def build_metrics(self, training: bool = True):
        metrics = super().build_metrics(training)
        if not training and self.task_config.use_coco_metrics:
            self.hook_calls.require("_build_coco_metrics", "MaskRCNNTask.build_metrics(training=False)")
        if training and self.task_config.log_collapse_signals:
            names = list(COLLAPSE_METRICS) + [
                self._share_metric_name(c) for c in range(1, self.label_map.num_classes + 1)
            ]
            metrics += [tf_keras.metrics.Mean(n, dtype=tf.float32) for n in names]
        return metrics

    # ------------------------------------------------------------ evaluation
    def _build_coco_metrics(self):
        """Model Garden's set-up (it writes annotation.json into model_dir when masks are evaluated
        without task.annotation_file), then the one evaluator of `tfmaskrcnn eval` in its place:
        per-class AP, confusion-based precision/recall and the collapse alarm reach TensorBoard."""
        from tfmaskrcnn.evaluation.model_garden import ModelGardenEvaluator  # pylint: disable=g-import-not-at-top

        self.hook_calls.record("_build_coco_metrics")
        super()._build_coco_metrics()
        stock = self.coco_metric
        self.coco_metric = ModelGardenEvaluator(
            annotation_file=stock._annotation_file,  # pylint: disable=protected-access
            include_mask=self.task_config.model.include_mask,
            coco_gt=getattr(stock, "_coco_gt", None),  # already loaded by the stock evaluator
            label_map=self.label_map,
            max_num_eval_detections=stock.max_num_eval_detections,
        )
