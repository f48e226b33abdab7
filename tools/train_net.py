#!/usr/bin/env python
"""Train and evaluate InfluencerFormer2D (detectron2's DefaultTrainer pattern).

    python tools/train_net.py --config-file projects/InfluencerFormer2D/configs/coco.yaml --num-gpus 8
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS path/to/model.pth   # -> eval_metrics.json
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --overwrite     # delete the previous run in OUTPUT_DIR first

Training into an OUTPUT_DIR that holds a previous run (checkpoints, last_checkpoint, metrics.json,
TensorBoard events) stops with an error unless --resume continues it or --overwrite deletes its
files first (otherwise model_final.pth would be replaced and metrics.json mix two runs).
The criterion is chosen by MODEL.MASK_FORMER.CRITERION (hungarian,
reference, ot).  Without a GPU, MODEL.DEVICE falls back
to cpu; on the CPU ``--num-gpus N`` starts N worker processes joined
by gloo (influencerformer2d.launch).
"""
import copy
import itertools
import logging
import os
import sys
from typing import Any, Dict, List, Set

import torch

import detectron2.utils.comm as comm
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    verify_results,
)
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger

from influencer_core.run_files import (CheckpointError, OutputDirError, add_cpu_threads_arg, check_checkpoint_file,
                                       prepare_output_dir, set_cpu_threads, warn_other_checkout)
from influencerformer2d.checkpoint import CheckedCheckpointer, use_checked_checkpointer
from influencerformer2d.config import load_config
from influencerformer2d.data.datasets import DatasetError, register_checkout_synthetic_coco
from influencerformer2d.evaluation import DuplicateRateEvaluator
from influencerformer2d.hooks import (
    CapacityAnnealingHook,
    EpsilonAnnealingHook,
    ModelScalarsHook,
    capacity_schedule_from_cfg,
    epsilon_schedule_from_cfg,
    unwrap_model,
)
from influencerformer2d.launch import launch
from influencerformer2d.data.dataset_mappers import build_train_mapper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
register_checkout_synthetic_coco(ROOT)  # datasets/generated/synthetic_coco unless DETECTRON2_DATASETS

# (non-empty) files that show a detectron2 training run in OUTPUT_DIR, and the further ones --overwrite
# deletes with them; TensorBoard events and an empty metrics.json are also left by a run that failed while starting
RUN_MARKERS = ("last_checkpoint", "model_*.pth", "metrics.json")
RUN_LOGS = ("events.out.tfevents.*", "log.txt", "log.txt.rank*", "inference")


def _fast_coco_eval_available() -> bool:
    """detectron2's C++ COCOeval needs its compiled extension (absent in registry builds)."""
    try:
        from detectron2 import _C

        return hasattr(_C, "COCOevalAccumulate") and not getattr(_C, "__file__", "").endswith(".py")
    except ImportError:
        return False


class Trainer(DefaultTrainer):
    """DefaultTrainer with Mask2Former's evaluators, mappers and optimizer.

    Checkpoints also carry the optimizer (and AMP scaler) state, which detectron2
    0.6's DefaultTrainer leaves out, so ``--resume`` continues where training stopped.
    Checkpoints are read by :class:`CheckedCheckpointer` (a damaged file is a CheckpointError
    naming it).
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        use_checked_checkpointer(self)

    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    def build_hooks(self):
        hooks = super().build_hooks()
        criterion = getattr(unwrap_model(self.model), "criterion", None)
        # EPSILON_* / AUX_CAPACITY_* are the ot criterion's knobs; other criteria ignore them like the
        # other INFLUENCER keys; before the writer, so that this step's value is logged
        for hook, schedule, attr in ((EpsilonAnnealingHook, epsilon_schedule_from_cfg(self.cfg), "epsilon"),
                                     (CapacityAnnealingHook, capacity_schedule_from_cfg(self.cfg), "aux_capacity")):
            if schedule is not None and hasattr(criterion, attr):
                hooks.insert(-1, hook(schedule))
        hooks.insert(-1, ModelScalarsHook())  # criterion statistics, read after the step
        return hooks

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        test = cfg.MODEL.MASK_FORMER.TEST
        fast = _fast_coco_eval_available()
        evaluators = []
        if kind == "sem_seg" or (kind == "coco_panoptic_seg" and test.SEMANTIC_ON):
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        instance_json = hasattr(MetadataCatalog.get(dataset_name), "json_file")
        if kind == "coco_panoptic_seg" and test.INSTANCE_ON and not instance_json:
            logging.getLogger("influencerformer2d").warning(
                f"{dataset_name} has no instances json: mask AP is not evaluated (PQ and mIoU are)")
        if kind == "coco" or (kind == "coco_panoptic_seg" and test.INSTANCE_ON and instance_json):
            evaluators.append(COCOEvaluator(dataset_name, tasks=("segm",), output_dir=output_folder,
                                            use_fast_impl=fast))
        if kind == "coco_panoptic_seg" and test.PANOPTIC_ON:
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if test.INSTANCE_ON and kind in ("coco", "coco_panoptic_seg"):
            evaluators.append(DuplicateRateEvaluator())
        if not evaluators:
            raise NotImplementedError(f"no evaluator for dataset {dataset_name} of type {kind!r}")
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg, True))

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """AdamW/SGD; backbone lr x BACKBONE_MULTIPLIER; no decay on norms, embeddings and
        Swin's position tables; optional full-model gradient clipping."""
        norm_types = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
                      torch.nn.GroupNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
                      torch.nn.LayerNorm, torch.nn.LocalResponseNorm)
        defaults = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
        params: List[Dict[str, Any]] = []
        seen: Set[torch.nn.Parameter] = set()
        for module_name, module in model.named_modules():
            for param_name, value in module.named_parameters(recurse=False):
                if not value.requires_grad or value in seen:
                    continue
                seen.add(value)
                hp = copy.copy(defaults)
                if "backbone" in module_name:
                    hp["lr"] = hp["lr"] * cfg.SOLVER.BACKBONE_MULTIPLIER
                if "relative_position_bias_table" in param_name or "absolute_pos_embed" in param_name:
                    hp["weight_decay"] = 0.0
                if isinstance(module, norm_types):
                    hp["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_NORM
                if isinstance(module, torch.nn.Embedding):
                    hp["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_EMBED
                params.append({"params": [value], **hp})

        clip = cfg.SOLVER.CLIP_GRADIENTS
        full_model_clip = clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0

        def with_full_model_clipping(optim):
            if not full_model_clip:
                return optim

            class FullModelClipped(optim):
                def step(self, closure=None):
                    all_params = itertools.chain(*[g["params"] for g in self.param_groups])
                    torch.nn.utils.clip_grad_norm_(all_params, clip.CLIP_VALUE)
                    return super().step(closure=closure)

            return FullModelClipped

        kind = cfg.SOLVER.OPTIMIZER
        if kind == "SGD":
            optimizer = with_full_model_clipping(torch.optim.SGD)(params, cfg.SOLVER.BASE_LR,
                                                                  momentum=cfg.SOLVER.MOMENTUM)
        elif kind == "ADAMW":
            optimizer = with_full_model_clipping(torch.optim.AdamW)(params, cfg.SOLVER.BASE_LR)
        else:
            raise NotImplementedError(f"SOLVER.OPTIMIZER={kind!r}; choose SGD or ADAMW")
        if not full_model_clip:
            optimizer = maybe_add_gradient_clipping(cfg, optimizer)
        return optimizer


def argument_parser():
    """detectron2's default_argument_parser plus --overwrite (flags go before the KEY VALUE overrides)."""
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="train into an OUTPUT_DIR that holds a previous run after deleting that run's "
                        "checkpoints and logs (without it, or --resume, such a folder is refused)")
    add_cpu_threads_arg(parser)
    return parser


def check_output_dir(cfg, args):
    """Refuse (OutputDirError) or, with --overwrite, clear an OUTPUT_DIR holding a previous run.

    Runs on the main process before detectron2 opens log.txt there; the others wait for it."""
    if comm.is_main_process():
        prepare_output_dir(cfg.OUTPUT_DIR, markers=RUN_MARKERS, also_remove=RUN_LOGS,
                           resume=args.resume, overwrite=getattr(args, "overwrite", False),
                           keep=[cfg.MODEL.WEIGHTS], setting="OUTPUT_DIR")
    comm.synchronize()


def load_cfg(args):
    """The frozen config of the command line (:func:`influencerformer2d.config.load_config`)."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = load_cfg(args)
    if not args.eval_only:
        check_output_dir(cfg, args)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="influencerformer2d")
    if cfg.MODEL.DEVICE == "cpu":
        threads = set_cpu_threads(getattr(args, "cpu_threads", None))
        logging.getLogger("influencerformer2d").warning(
            f"no CUDA device: running on the CPU with {threads} torch thread(s) (--cpu-threads)")
    return cfg


def check_weights_early(cfg, args):
    """The structural check of MODEL.WEIGHTS before the model and the data loader are built (the
    Trainer reads the datasets first: minutes on COCO); skipped for URLs and when --resume finds a
    checkpoint (then MODEL.WEIGHTS is not read)."""
    weights = cfg.MODEL.WEIGHTS
    if not weights or "://" in weights or (args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR,
                                                                                         "last_checkpoint"))):
        return
    check_checkpoint_file(weights, "MODEL.WEIGHTS")


def check_dataset_names(cfg, args):
    """Every dataset named in DATASETS.TEST (and DATASETS.TRAIN when training) is registered."""
    from detectron2.data import DatasetCatalog

    registered = set(DatasetCatalog.list())
    keys = ("TEST",) if args.eval_only else ("TRAIN", "TEST")
    for key in keys:
        unknown = [name for name in cfg.DATASETS[key] if name not in registered]
        if unknown:
            # the ones this project's configs use (detectron2 registers dozens more)
            ours = sorted(n for n in registered if n.startswith("synthetic_") or n.endswith("_panoptic_with_sem_seg"))
            raise DatasetError(f"DATASETS.{key}: {', '.join(map(repr, unknown))} not registered; the project's "
                               f"configs use {', '.join(ours)}; for data of your own set DATASETS.OWN "
                               "(configs/own-data.yaml)")


def write_eval_metrics(cfg, res):
    """--eval-only: the results, flattened as in training's metrics.json ("panoptic_seg/PQ", ...; one
    dataset: no dataset prefix), with the weights and test sets, to OUTPUT_DIR/eval_metrics.json."""
    import json

    from detectron2.evaluation.testing import flatten_results_dict

    path = os.path.join(cfg.OUTPUT_DIR, "eval_metrics.json")
    with open(path, "w") as f:
        json.dump({"weights": cfg.MODEL.WEIGHTS, "datasets": list(cfg.DATASETS.TEST),
                   "metrics": {k: float(v) for k, v in flatten_results_dict(res).items()}}, f, indent=1)
    logging.getLogger("influencerformer2d").info(f"evaluation results written to {path}")


def main(args):
    cfg = setup(args)
    check_weights_early(cfg, args)
    check_dataset_names(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        CheckedCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
            write_eval_metrics(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    """The command line: parse ``argv``, launch ``main`` on --num-gpus processes; returns the exit
    status (2 with the message for an unreadable checkpoint, an OUTPUT_DIR holding a previous run
    or missing / malformed dataset files)."""
    args = argument_parser().parse_args(argv)
    warn_other_checkout(ROOT)
    print("Command Line Args:", args)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,), device=load_cfg(args).MODEL.DEVICE)
    except (CheckpointError, OutputDirError, DatasetError) as exc:  # the user fixes these: message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
