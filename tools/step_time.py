#!/usr/bin/env python
"""Training step time with each criterion, side by side, in one process.

    python tools/step_time.py                      # 2D: configs/synthetic.yaml, hungarian vs ot
    python tools/step_time.py --task 3d            # 3D: the synthetic-rooms configs of each arm
    python tools/step_time.py --task 3d --dataset-3d s3dis --steps 20

One model, one optimizer and one data stream; the arms take turns step by step (A B A B ...),
so machine noise and the model's progress reach every arm alike.  A step is what the trainer
does: forward, the arm's criterion, backward, optimizer step.  2D swaps ``model.criterion`` (and
its loss weights) of the detectron2 model built from ``--config-file``; 3D swaps
``model.criterion`` of the mmengine model for the one each arm's config builds
(``influencer_core.arms``).  The first ``--warmup`` turns are not counted.

Prints one JSON object: per arm the median step time (wall and process CPU seconds), the median
criterion forward time, its share of the step, and each arm's step-time ratio to the first arm.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from influencer_core import arms
from influencer_data.cli import at_least

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_2D = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")


def _median(values):
    return statistics.median(values) if values else None


def setup_2d(args):
    """(model, optimizer, batches, {arm: (criterion, weight_dict)}, criterion-time reader)."""
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model

    from influencerformer2d.config import load_config
    from influencerformer2d.data.dataset_mappers import COCOInstanceLSJDatasetMapper, COCOPanopticLSJDatasetMapper
    from influencerformer2d.data.datasets import register_checkout_synthetic_coco
    from influencerformer2d.influencerformer_model import build_criterion_from_cfg

    register_checkout_synthetic_coco(ROOT)
    cfg = load_config(args.config_file, ["MODEL.MASK_FORMER.CRITERION", arms.criterion_2d(args.arms[0]),
                                         "SEED", str(args.seed), *args.opts])
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    model.train()
    mappers = {"coco_panoptic_lsj": COCOPanopticLSJDatasetMapper, "coco_instance_lsj": COCOInstanceLSJDatasetMapper}
    loader = iter(build_detection_train_loader(cfg, mapper=mappers[cfg.INPUT.DATASET_MAPPER_NAME](cfg, True)))
    num_aux = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1 if cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION else 0
    criteria = {}
    for arm in args.arms:
        arm_cfg = cfg.clone()
        arm_cfg.defrost()
        arm_cfg.MODEL.MASK_FORMER.CRITERION = arms.criterion_2d(arm)
        crit = build_criterion_from_cfg(arm_cfg, model.sem_seg_head.num_classes).to(model.device)
        criteria[arm] = (crit, crit.weight_dict_for(num_aux))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.SOLVER.BASE_LR)

    def use(arm):
        model.criterion, model.weight_dict = criteria[arm]

    def step():
        batch = next(loader)
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        return model.pop_scalars().get("time/criterion_forward")

    return use, step


def setup_3d(args):
    from mmengine.config import Config
    from mmengine.registry import MODELS
    from mmengine.runner import Runner

    from influencerformer3d.runner import ensure_data, set_cpu_threads, set_data_root

    configs = {arm: os.path.join(ROOT, arms.config_3d(args.dataset_3d, arm)) for arm in args.arms}
    cfg = Config.fromfile(configs[args.arms[0]])
    cfg.work_dir = tempfile.mkdtemp(prefix="step_time_3d_")
    cfg.randomness = dict(seed=args.seed)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.pop("val_dataloader", None), cfg.pop("val_cfg", None), cfg.pop("val_evaluator", None)
    cfg.pop("test_dataloader", None), cfg.pop("test_cfg", None), cfg.pop("test_evaluator", None)
    cfg.custom_hooks = []
    if args.data_root:
        set_data_root(cfg, args.data_root)
    ensure_data(cfg, splits=("train",), config_name=configs[args.arms[0]])
    set_cpu_threads(None)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    model.train()
    criteria = {arm: MODELS.build(Config.fromfile(path).model.criterion) for arm, path in configs.items()}
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    loader = runner.build_dataloader(cfg.train_dataloader)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def use(arm):
        model.criterion = criteria[arm]

    def step():
        log_vars = model.train_step(next(stream), optim_wrapper)
        timer = log_vars.get("criterion_time")
        return float(timer) if timer is not None else None

    return use, step


def measure(args):
    use, step = (setup_2d if args.task == "2d" else setup_3d)(args)
    wall = {a: [] for a in args.arms}
    cpu = {a: [] for a in args.arms}
    crit = {a: [] for a in args.arms}
    for turn in range(args.warmup + args.steps):
        for arm in args.arms:  # A B A B: alternate so that noise hits every arm alike
            use(arm)
            t0, c0 = time.perf_counter(), time.process_time()
            crit_s = step()
            if turn >= args.warmup:
                wall[arm].append(time.perf_counter() - t0)
                cpu[arm].append(time.process_time() - c0)
                if crit_s is not None:
                    crit[arm].append(float(crit_s))
    first = args.arms[0]
    out = {"task": args.task, "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads(),
           "arms": {}}
    for arm in args.arms:
        step_s, crit_s = _median(wall[arm]), _median(crit[arm])
        out["arms"][arm] = {
            "step_s": step_s, "step_cpu_s": _median(cpu[arm]), "criterion_forward_s": crit_s,
            "criterion_share": crit_s / step_s if crit_s is not None and step_s else None,
            f"step_ratio_to_{first}": step_s / _median(wall[first]),
            f"cpu_ratio_to_{first}": _median(cpu[arm]) / _median(cpu[first]),
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Training step time per criterion, the arms alternating in one "
                                 "process; prints JSON.")
    ap.add_argument("--task", choices=("2d", "3d"), default="2d")
    ap.add_argument("--config-file", default=CONFIG_2D, help="2D: the detectron2 config")
    ap.add_argument("--dataset-3d", choices=sorted(arms.STEM_3D), default="synthetic",
                    help="3D: whose influencer_core.arms configs the arms use")
    ap.add_argument("--data-root", help="3D: read (or generate, for synthetic configs) the rooms here")
    ap.add_argument("--arms", nargs="+", default=["hungarian", "ot"])
    ap.add_argument("--steps", type=at_least(1, "counted turns per arm"), default=20)
    ap.add_argument("--warmup", type=at_least(0, "uncounted turns per arm"), default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=at_least(1, "torch threads"), default=None,
                    help="torch intra-op threads (default: torch's, or 1 in 3D as tools/train_3d.py)")
    ap.add_argument("--output", help="also write the JSON to this file")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="2D: extra KEY VALUE config overrides")
    args = ap.parse_args(argv)
    try:
        args.arms = list(dict.fromkeys(arms.canonical(a) for a in args.arms))
    except ValueError as e:
        ap.error(str(e))
    if args.task == "3d" and args.opts:
        ap.error("KEY VALUE overrides are 2D config keys; edit the 3D configs instead")
    out = measure_with_threads(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def measure_with_threads(args):
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        if args.task == "3d":
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # set_cpu_threads reads it
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
