"""InfluencerFormer2D end to end: configs, checkpoint layout, training, evaluation, resume."""
import glob
import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

import influencerformer2d  # noqa: F401
from influencerformer2d import add_influencerformer_config
from influencerformer2d.data.datasets import register_synthetic_coco
from influencerformer2d.hooks import CriterionScheduleHook, EpsilonAnnealingHook
from influencerformer2d.modeling.pixel_decoder import triton_available
from influencer_core.schedules import EpsilonSchedule
from influencer_data.synthetic_2d import generate as generate_synthetic_2d
from tests import DATA, ROOT, load_script

CONFIGS = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs")
KEYS = os.path.join(DATA, "checkpoint_keys")


def _train_net():
    """tools/train_net.py as a module (a script: loaded by its path)."""
    return load_script("tools/train_net.py")


def load_cfg(name, *opts):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("syn2d"))
    generate_synthetic_2d(root, num_train=12, num_val=4, image_size=64, seed=3)
    register_synthetic_coco(root, prefix="t2d")
    yield root


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))))
def test_every_config_builds(name):
    if "swinL" in name:
        pytest.skip("built in test_checkpoint_layout (200M parameters, built once)")
    model = build_model(load_cfg(name, "MODEL.WEIGHTS", ""))
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("cfg_name,keys", [("coco.yaml", "m2f_r50_panoptic_keys.json"),
                                           ("coco-instance-hungarian.yaml", "m2f_r50_instance_keys.json"),
                                           ("coco-swinL.yaml", "m2f_swinL_panoptic_keys.json")])
def test_checkpoint_layout_equals_mask2former(cfg_name, keys):
    """The whole model's state_dict has exactly Mask2Former's keys and shapes: its checkpoints load."""
    with open(os.path.join(KEYS, keys)) as f:
        ref = json.load(f)
    model = build_model(load_cfg(cfg_name, "MODEL.WEIGHTS", ""))
    sd = model.state_dict()
    assert set(sd) == set(ref), (sorted(set(ref) - set(sd))[:5], sorted(set(sd) - set(ref))[:5])
    assert all(list(sd[k].shape) == ref[k] for k in ref)
    model.load_state_dict({k: torch.zeros(ref[k]) if ref[k] else torch.zeros(()) for k in ref}, strict=True)


def _batch(dataset, n=2):
    from influencerformer2d.data.dataset_mappers import COCOPanopticLSJDatasetMapper

    cfg = load_cfg("synthetic.yaml", "INPUT.IMAGE_SIZE", 64)
    mapper = COCOPanopticLSJDatasetMapper(cfg, True)
    return [mapper(r) for r in DatasetCatalog.get(dataset)[:n]]


@pytest.mark.parametrize("criterion", ["hungarian", "reference", "ot"])
def test_full_model_forward_backward_each_criterion(synthetic_root, criterion):
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.CRITERION", criterion, "DATASETS.TRAIN",
                   ("t2d_train_panoptic",), "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256)
    model = build_model(cfg)
    model.train()
    losses = model(_batch("t2d_train_panoptic"))
    assert set(losses) == set(model.weight_dict)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    head = [p for n, p in model.named_parameters() if n.startswith("sem_seg_head.predictor")]
    assert all(p.grad is not None for p in head)


@pytest.mark.parametrize("criterion", ["hungarian", "reference", "ot"])
def test_num_classes_below_the_datasets_is_an_error(synthetic_root, criterion):
    """A config whose NUM_CLASSES is smaller than the dataset's fails on the first step (it used
    to train with the extra classes turned into 'no object' or crash with an IndexError)."""
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.CRITERION", criterion, "DATASETS.TRAIN",
                   ("t2d_train_panoptic",), "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256,
                   "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1)
    model = build_model(cfg).train()
    with pytest.raises(ValueError, match=r"outside \[0, 0\].*set num_classes"):
        model(_batch("t2d_train_panoptic"))


@pytest.mark.parametrize("criterion", ["hungarian", "ot"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_full_model_under_autocast(synthetic_root, criterion, dtype):
    """Mixed precision (CUDA's AMP trains in float16 autocast) through the whole model and
    criterion, here with CPU autocast: float32 losses near the float32 run, finite gradients,
    and inference that runs under it."""
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.CRITERION", criterion, "DATASETS.TRAIN",
                   ("t2d_train_panoptic",), "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256)
    batch = _batch("t2d_train_panoptic")
    model = build_model(cfg).train()
    torch.manual_seed(1)
    full = sum(model(batch).values())
    torch.manual_seed(1)  # the same sampled points
    with torch.autocast("cpu", dtype=dtype):
        losses = model(batch)
    assert all(v.dtype == torch.float32 for v in losses.values())
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() == pytest.approx(full.item(), rel=0.02)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = model([{"image": batch[0]["image"], "height": 64, "width": 64}])[0]
    assert out["panoptic_seg"][0].shape == (64, 64) and torch.isfinite(out["instances"].scores).all()


def _run_trainer(cfg, resume=False):
    trainer = _train_net().Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer


def _train_cfg(tmp, synthetic_root, *opts):
    cfg = load_cfg("synthetic.yaml", "DATASETS.TRAIN", ("t2d_train_panoptic",), "DATASETS.TEST", ("t2d_val_panoptic",),
                   "INPUT.IMAGE_SIZE", 64, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
                   "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(tmp), "SEED", 7, *opts)
    return cfg


def test_influencer_options_reach_the_criterion():
    from influencerformer2d.influencerformer_model import build_criterion_from_cfg

    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.INFLUENCER.CLASS_TARGET", "mass",
                   "MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY", 2.5,
                   "MODEL.MASK_FORMER.INFLUENCER.EXCLUSION_WEIGHT", 1.5)
    crit = build_criterion_from_cfg(cfg, num_classes=9)
    assert (crit.class_target, crit.aux_capacity, crit.exclusion_weight) == ("mass", 2.5, 1.5)
    bad = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.INFLUENCER.CLASS_TARGET", "soft")
    with pytest.raises(ValueError, match="class_target"):
        build_criterion_from_cfg(bad, num_classes=9)


def test_twenty_iterations_lower_the_loss(tmp_path, synthetic_root):
    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 20, "SOLVER.BASE_LR", 0.001,
                     "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", ())
    trainer = _run_trainer(cfg)
    trainer.train()
    history = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(history) == 20 and all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.9 * np.mean(history[:5])
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "model_final.pth").exists()


def test_epsilon_annealing_hook_sets_and_logs_epsilon(tmp_path, synthetic_root):
    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 4, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (),
                     "MODEL.MASK_FORMER.CRITERION", "ot", "MODEL.MASK_FORMER.INFLUENCER.EPSILON", 0.4,
                     "MODEL.MASK_FORMER.INFLUENCER.EPSILON_END", 0.025,
                     "MODEL.MASK_FORMER.INFLUENCER.EPSILON_SCHEDULE", "exp",
                     "MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY", 3.0,
                     "MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY_SCHEDULE", "linear")
    trainer = _run_trainer(cfg)
    trainer.train()
    logged = [v for v, _ in trainer.storage.history("criterion/epsilon").values()]
    assert logged == pytest.approx([0.4, 0.2, 0.1, 0.05])  # 0.4 * (1/16) ** (i / 4)
    assert trainer.model.criterion.epsilon == pytest.approx(0.05)
    # the auxiliary layers' capacity goes 3 -> 1 (AUX_CAPACITY_END) over the 4 iterations
    capacity = [v for v, _ in trainer.storage.history("criterion/aux_capacity").values()]
    assert capacity == pytest.approx([3.0, 2.5, 2.0, 1.5])
    # the criterion's statistics and time, kept on the device in the step, are logged after it
    mass = [v for v, _ in trainer.storage.history("criterion/ot_assigned_mass").values()]
    # each instance receives about one unit of plan mass; Sinkhorn stops after a fixed number of
    # iterations, so its column sums carry a small residual (1.25e-5 seen on CI), not a bug
    assert len(mass) == 4 and all(0 < m <= 1.0 + 1e-3 for m in mass), mass
    assert all(t > 0 for t, _ in trainer.storage.history("time/criterion_forward").values())
    assert trainer.model.pending_scalars == {}
    # a criterion without epsilon ignores the schedule (like the other INFLUENCER keys) ...
    hung = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 1, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (),
                      "MODEL.MASK_FORMER.CRITERION", "hungarian",
                      "MODEL.MASK_FORMER.INFLUENCER.EPSILON_SCHEDULE", "cosine",
                      "MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY_SCHEDULE", "linear")
    assert not any(isinstance(h, CriterionScheduleHook) for h in _run_trainer(hung)._hooks)
    # ... and the hook itself refuses one
    from detectron2.engine import SimpleTrainer
    hook = EpsilonAnnealingHook(EpsilonSchedule(0.1, 0.01, 4))
    hook.trainer = SimpleTrainer(torch.nn.Linear(1, 1), [], None)
    with pytest.raises(ValueError, match="EPSILON_SCHEDULE"):
        hook.before_train()


def test_resume_restores_identical_state(tmp_path, synthetic_root):
    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 3, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", ())
    a = _run_trainer(cfg)
    a.train()
    b = _run_trainer(cfg, resume=True)
    assert b.start_iter == 3
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert all(torch.equal(oa["state"][i]["exp_avg"], ob["state"][i]["exp_avg"]) for i in oa["state"])
    assert a.scheduler.state_dict()["last_epoch"] == b.scheduler.state_dict()["last_epoch"]


def test_train_net_main_trains_then_evaluates_with_eval_only(tmp_path, synthetic_root, monkeypatch):
    """`tools/train_net.py` as a user runs it: train, then `--eval-only MODEL.WEIGHTS` on the result."""
    from detectron2.engine import default_argument_parser

    train_net = _train_net()

    opts = ["DATASETS.TRAIN", "('t2d_train_panoptic',)", "DATASETS.TEST", "('t2d_val_panoptic',)",
            "INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0",
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256", "OUTPUT_DIR", str(tmp_path), "SEED", "3"]
    config = ["--config-file", os.path.join(CONFIGS, "synthetic.yaml")]
    assert train_net.argument_parser().parse_args(["--cpu-threads", "2"] + config).cpu_threads == 2
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:  # on the CPU, one torch thread unless told otherwise (--cpu-threads / $OMP_NUM_THREADS)
        train_net.main(default_argument_parser().parse_args(config + opts))
        assert torch.cuda.is_available() or torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    weights = tmp_path / "model_final.pth"
    assert weights.exists() and (tmp_path / "config.yaml").exists()
    evaluated = []
    test = train_net.Trainer.test
    monkeypatch.setattr(train_net.Trainer, "test",
                        classmethod(lambda cls, cfg, model: evaluated.append(model.state_dict()) or test(cfg, model)))
    res = train_net.main(default_argument_parser().parse_args(
        config + ["--eval-only"] + opts + ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "eval")]))
    assert {"panoptic_seg", "segm", "sem_seg", "duplicates"} <= set(res)
    assert 0.0 <= res["panoptic_seg"]["PQ"] <= 100.0 and 0.0 <= res["sem_seg"]["mIoU"] <= 100.0
    written = json.load(open(tmp_path / "eval" / "eval_metrics.json"))  # the same numbers, flattened
    assert written["weights"] == str(weights) and written["datasets"] == ["t2d_val_panoptic"]
    assert written["metrics"]["panoptic_seg/PQ"] == pytest.approx(res["panoptic_seg"]["PQ"])
    trained = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    assert len(evaluated) == 1 and all(torch.equal(evaluated[0][k], v) for k, v in trained.items())


class _PerfectModel(torch.nn.Module):
    """Turns each image's ground truth into perfect logits and runs the model's own inference."""

    def __init__(self, model, records):
        super().__init__()
        self.model = model
        self.records = {r["image_id"]: r for r in records}

    def forward(self, batched_inputs):
        from detectron2.data import detection_utils as utils
        from panopticapi.utils import rgb2id

        out = []
        for inp in batched_inputs:
            rec = self.records[inp["image_id"]]
            pan = torch.from_numpy(rgb2id(utils.read_image(rec["pan_seg_file_name"], "RGB")).astype(np.int64))
            segs = rec["segments_info"]
            q = self.model.num_queries
            c = self.model.sem_seg_head.num_classes
            cls = torch.full((q, c + 1), -20.0)
            cls[:, c] = 20.0
            masks = torch.full((q, *pan.shape), -20.0)
            for i, s in enumerate(segs):
                cls[i, c] = -20.0
                cls[i, s["category_id"]] = 20.0
                masks[i][pan == s["id"]] = 20.0
            out.append({"panoptic_seg": self.model.panoptic_inference(cls, masks),
                        "instances": self.model.instance_inference(cls, masks)})
        return out


def test_perfect_prediction_scores_pq_100_and_ap_100(tmp_path, synthetic_root):
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators, inference_on_dataset

    cfg = _train_cfg(tmp_path, synthetic_root)
    model = build_model(cfg).eval()
    name = "t2d_val_panoptic"
    perfect = _PerfectModel(model, DatasetCatalog.get(name))
    evaluator = DatasetEvaluators([COCOPanopticEvaluator(name, str(tmp_path / "pan")),
                                   COCOEvaluator(name, tasks=("segm",), output_dir=str(tmp_path / "coco"),
                                                 use_fast_impl=False)])
    res = inference_on_dataset(perfect, build_detection_test_loader(cfg, name), evaluator)
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------
# GPU (run on a CUDA machine; skipped where there is none)
# ------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("criterion", ["hungarian", "ot"])
def test_cuda_amp_training_and_evaluation(tmp_path, synthetic_root, criterion, fused_msda_calls):
    """The GPU path end to end: AMPTrainer (float16 autocast, gradient scaler), the fused
    deformable attention inside the model, then COCO panoptic / instance evaluation."""
    from detectron2.engine import AMPTrainer

    Trainer = _train_net().Trainer

    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 20, "SOLVER.BASE_LR", 0.001,
                     "SOLVER.AMP.ENABLED", True, "TEST.EVAL_PERIOD", 0, "MODEL.MASK_FORMER.CRITERION", criterion)
    cfg.MODEL.DEVICE = "cuda"
    trainer = _run_trainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer)
    trainer.train()
    history = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(history) == 20 and all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.9 * np.mean(history[:5])
    assert trainer._trainer.grad_scaler.get_scale() > 0
    assert (len(fused_msda_calls) > 0) == triton_available()  # 6 encoder layers per forward
    res = Trainer.test(cfg, trainer.model)
    assert 0.0 <= res["panoptic_seg"]["PQ"] <= 100.0 and np.isfinite(res["segm"]["AP"])


@cuda
def test_cuda_training_step_never_syncs_with_the_host(synthetic_root):
    """influencer_ot's whole training step (model, criterion, statistics, backward) queues GPU
    work without waiting for it (CUDA sync debug mode turns a synchronisation into an error).
    The value checks (CHECK_VALUES, on by default) read their flags back once per step: off here."""
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.CRITERION", "ot", "DATASETS.TRAIN",
                   ("t2d_train_panoptic",), "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256,
                   "MODEL.MASK_FORMER.CHECK_VALUES", False)
    cfg.MODEL.DEVICE = "cuda"
    model = build_model(cfg).train()
    batch = [dict(x, image=x["image"].cuda(), instances=x["instances"].to("cuda"))
             for x in _batch("t2d_train_panoptic")]
    sum(model(batch).values()).backward()  # warm-up: lazy initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = sum(model(batch).values())
        total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total)
    scalars = model.pop_scalars()  # read after the step
    assert scalars["time/criterion_forward"] > 0 and 0 < scalars["criterion/ot_assigned_mass"] <= 1 + 1e-5


@cuda
def test_cuda_model_matches_cpu(synthetic_root, fused_msda_calls, no_tf32):
    """Same weights and images: the CUDA model (fused deformable attention, TF32 off) computes the
    CPU model's predictions."""
    import copy

    cfg = load_cfg("synthetic.yaml", "DATASETS.TRAIN", ("t2d_train_panoptic",))
    cpu = build_model(cfg).eval()
    gpu = copy.deepcopy(cpu).cuda()
    batch = _batch("t2d_train_panoptic")
    outs = {}
    for name, model in (("cpu", cpu), ("cuda", gpu)):
        captured = {}
        handle = model.sem_seg_head.register_forward_hook(lambda mod, inp, out: captured.update(out))
        with torch.no_grad():
            model([{"image": x["image"], "height": 64, "width": 64} for x in batch])
        handle.remove()
        outs[name] = captured
    assert (len(fused_msda_calls) > 0) == triton_available()
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(outs["cuda"][key].cpu(), outs["cpu"][key], atol=1e-3, rtol=1e-3, msg=key)


def _targets_for(images, k_per_image, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = images.shape[-2:]
    return [{"labels": torch.randint(0, num_classes, (k,), generator=g),
             "masks": torch.rand(k, h, w, generator=g) > 0.7} for k in k_per_image]


def _assert_same_predictions(a, b):
    """Equal class and mask logits in the final layer and every auxiliary one."""
    for x, y in zip([a] + a["aux_outputs"], [b] + b["aux_outputs"]):
        assert torch.allclose(x["pred_logits"], y["pred_logits"], atol=1e-5)
        assert torch.allclose(x["pred_masks"], y["pred_masks"], atol=1e-4)


def test_piloted_queries_leave_the_ordinary_outputs_unchanged():
    """Mask-piloted queries (training only) are invisible to the ordinary queries: the ordinary
    predictions equal those without them; the piloted ones come back per target, padded."""
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.PILOTED.ENABLED", True)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert "sem_seg_head.predictor.label_enc.weight" in model.state_dict()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(images)
        targets = _targets_for(images, (3, 1), 9)
        plain = model.sem_seg_head(feats)
        piloted = model.sem_seg_head(feats, targets=targets)
    assert "piloted" not in plain
    _assert_same_predictions(plain, piloted)
    p = piloted["piloted"]
    assert p["pred_logits"].shape == (2, 3, 10) and p["pred_masks"].shape[:2] == (2, 3)
    assert len(p["aux_outputs"]) == len(plain["aux_outputs"])
    with torch.no_grad():  # images without instances: no piloted queries at all
        assert "piloted" not in model.sem_seg_head(feats, targets=_targets_for(images, (0, 0), 9))
        model.eval()  # inference never builds them
        assert "piloted" not in model.sem_seg_head(feats, targets=targets)
    off = build_model(load_cfg("synthetic.yaml"))
    assert not any("label_enc" in k for k in off.state_dict())  # off: Mask2Former's layout


def test_piloted_noise_options_are_checked():
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.PILOTED.ENABLED", True,
                   "MODEL.MASK_FORMER.PILOTED.MASK_NOISE", 1.5)
    with pytest.raises(ValueError, match=r"PILOTED.MASK_NOISE must be in \[0, 1\], got 1.5"):
        build_model(cfg)


@pytest.mark.parametrize("arm", ["hungarian", "ot"])
def test_training_with_piloted_queries(tmp_path, synthetic_root, arm):
    """Both arms train with the piloted queries' losses (the same addition for the two)."""
    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 4, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (),
                     "MODEL.MASK_FORMER.CRITERION", arm, "MODEL.MASK_FORMER.PILOTED.ENABLED", True)
    trainer = _run_trainer(cfg)
    trainer.train()
    for key in ("loss_ce_mp", "loss_mask_mp", "loss_dice_mp", "loss_dice_mp_0"):
        values = [v for v, _ in trainer.storage.history(key).values()]
        assert len(values) == 4 and all(np.isfinite(values)) and max(values) > 0


def test_hybrid_group_leaves_the_main_outputs_unchanged():
    """The hybrid query group (training only) and the main queries do not see each other: the main
    predictions equal those of the same weights without the group, also beside piloted queries."""
    cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.HYBRID.NUM_QUERIES", 7, "MODEL.MASK_FORMER.PILOTED.ENABLED",
                   True)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    keys = set(model.state_dict())
    assert {f"sem_seg_head.predictor.hybrid_query_{n}.weight" for n in ("feat", "embed")} <= keys
    plain_cfg = load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.PILOTED.ENABLED", True)
    plain = build_model(plain_cfg).train()
    missing = plain.load_state_dict(model.state_dict(), strict=False).unexpected_keys
    assert sorted(missing) == ["sem_seg_head.predictor.hybrid_query_embed.weight",
                               "sem_seg_head.predictor.hybrid_query_feat.weight"]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(images)
        targets = _targets_for(images, (3, 1), 9)
        torch.manual_seed(1)  # the same piloted noise in both
        both = model.sem_seg_head(feats, targets=targets)
        torch.manual_seed(1)
        ref = plain.sem_seg_head(feats, targets=targets)
    _assert_same_predictions(both, ref)
    _assert_same_predictions(both["piloted"], ref["piloted"])
    g = both["hybrid"]
    assert g["pred_logits"].shape == (2, 7, 10) and g["pred_masks"].shape[:2] == (2, 7)
    assert len(g["aux_outputs"]) == len(ref["aux_outputs"])
    with torch.no_grad():
        model.eval()  # inference never builds them
        assert "hybrid" not in model.sem_seg_head(feats)
    with pytest.raises(ValueError, match="HYBRID.NUM_QUERIES must be an int >= 0"):
        build_model(load_cfg("synthetic.yaml", "MODEL.MASK_FORMER.HYBRID.NUM_QUERIES", -2))


@pytest.mark.parametrize("arm", ["hungarian", "ot"])
def test_training_with_a_hybrid_group(tmp_path, synthetic_root, arm):
    """Both arms train the hybrid group one-to-many; its losses are logged and weighted."""
    cfg = _train_cfg(tmp_path, synthetic_root, "SOLVER.MAX_ITER", 3, "TEST.EVAL_PERIOD", 0, "DATASETS.TEST", (),
                     "MODEL.MASK_FORMER.CRITERION", arm, "MODEL.MASK_FORMER.HYBRID.NUM_QUERIES", 20,
                     "MODEL.MASK_FORMER.HYBRID.CAPACITY", 2)
    trainer = _run_trainer(cfg)
    assert trainer.model.criterion.hybrid_capacity == 2
    trainer.train()
    for key in ("loss_ce_hy", "loss_mask_hy", "loss_dice_hy", "loss_dice_hy_0"):
        values = [v for v, _ in trainer.storage.history(key).values()]
        assert len(values) == 3 and all(np.isfinite(values)) and max(values) > 0
