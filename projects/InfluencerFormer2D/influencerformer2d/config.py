"""Config keys of InfluencerFormer2D.

``add_influencerformer_config(cfg)`` adds, with the same names and defaults, every key that
Mask2Former's ``add_maskformer2_config`` adds (so Mask2Former's yaml files load unchanged),
plus the keys that pick and tune the training criterion (``MODEL.MASK_FORMER.CRITERION`` and
``MODEL.MASK_FORMER.INFLUENCER.*``).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_influencerformer_config", "load_config", "OWN_DATA_PLACEHOLDER", "CRITERION_NAMES",
           "CRITERION_OPTION_KEYS", "NOT_IN_2D"]

# Names accepted by MODEL.MASK_FORMER.CRITERION: the three arms, the keys of influencer_core.CRITERIA
# (kept literal here so that reading a config never needs influencer_core); the earlier
# "influencer_reference" / "influencer_ot" still work, with a warning.
CRITERION_NAMES = ("hungarian", "reference", "ot")

# The one mapping from influencer_core criterion options to config keys (under
# MODEL.MASK_FORMER): build_criterion_from_cfg passes every option of the chosen criterion
# through it, and a test fails when a core option has neither a key here nor an entry in
# NOT_IN_2D.
CRITERION_OPTION_KEYS = {
    # shared by the three criteria (Mask2Former's keys)
    "class_weight": "CLASS_WEIGHT",
    "no_object_weight": "NO_OBJECT_WEIGHT",
    "num_points": "TRAIN_NUM_POINTS",
    "deep_supervision": "DEEP_SUPERVISION",
    "mask_weight": "MASK_WEIGHT",
    "dice_weight": "DICE_WEIGHT",
    "oversample_ratio": "OVERSAMPLE_RATIO",
    "importance_sample_ratio": "IMPORTANCE_SAMPLE_RATIO",
    "check_values": "CHECK_VALUES",
    # reference
    "influencer_weight": "INFLUENCER.WEIGHT",
    "attr_weight": "INFLUENCER.ATTR_WEIGHT",
    "rep_weight": "INFLUENCER.REP_WEIGHT",
    "bg_weight": "INFLUENCER.BG_WEIGHT",
    "rep_margin": "INFLUENCER.REP_MARGIN",
    "temperature": "INFLUENCER.TEMPERATURE",
    "eps": "INFLUENCER.PROFILE_EPS",
    "rep_space": "INFLUENCER.REP_SPACE",
    # ot
    "epsilon": "INFLUENCER.EPSILON",
    "sinkhorn_iters": "INFLUENCER.SINKHORN_ITERS",
    "sinkhorn_method": "INFLUENCER.SINKHORN_METHOD",
    "exclusion_weight": "INFLUENCER.EXCLUSION_WEIGHT",
    "exclusion_overlap": "INFLUENCER.EXCLUSION_OVERLAP",
    "exclusion_spare_better": "INFLUENCER.EXCLUSION_SPARE_BETTER",
    "class_target": "INFLUENCER.CLASS_TARGET",
    "class_quality": "INFLUENCER.CLASS_QUALITY",
    "class_smoothing": "INFLUENCER.CLASS_SMOOTHING",
    "class_cost": "INFLUENCER.CLASS_COST",
    "aux_capacity": "INFLUENCER.AUX_CAPACITY",
    "marginal_relax": "INFLUENCER.MARGINAL_RELAX",
    "reuse_final_plan": "INFLUENCER.REUSE_FINAL_PLAN",
    # hungarian and ot: the hybrid query group's one-to-many targets
    "hybrid_capacity": "HYBRID.CAPACITY",
}
# core options without a 2D key, and why
NOT_IN_2D = {
    "score_weight": "objectness loss: Mask2Former has no objectness head (OneFormer3D's option)",
    "score_iou_thr": "objectness loss: Mask2Former has no objectness head (OneFormer3D's option)",
}


def add_influencerformer_config(cfg):
    """Add the InfluencerFormer2D keys to a detectron2 config (in place)."""
    # ---- data: which dataset mapper, its augmentations and padding -------------------------
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    # Random crops are retried until no single category covers more than this share of the
    # crop (semantic segmentation mapper only).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad image and ground truth in the dataset mapper to a multiple of this (-1: no padding).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (the COCO "*_lsj" mappers): output size and scale range.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # ---- solver ------------------------------------------------------------------------------
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0  # weight decay of nn.Embedding parameters
    cfg.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW" or "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1  # learning-rate factor of the backbone

    cfg.MODEL.MASK_FORMER = CN()

    # ---- loss weights (Hungarian baseline; also used by the transport criterion) -------------
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0

    # ---- transformer decoder -----------------------------------------------------------------
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    # Number of predictions supervised: the decoder has DEC_LAYERS - 1 layers, plus the
    # prediction made from the learnable queries before the first layer.
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # What the decoder reads: "multi_scale_pixel_decoder" for Mask2Former, else
    # "transformer_encoder", "pixel_embedding" or a backbone feature name.
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"

    # ---- inference ---------------------------------------------------------------------------
    cfg.MODEL.MASK_FORMER.TEST = CN()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # Instance inference (not in Mask2Former): False keeps its top-k over query x class pairs, where
    # one query can be reported under several classes; True reports each query once, under its
    # best class (in a panoptic model a query whose best class is stuff gives no instance).
    # Effect on AP: docs/one_class_per_query.md.
    cfg.MODEL.MASK_FORMER.TEST.ONE_CLASS_PER_QUERY = False

    # Images are padded to a multiple of this in the model (overrides a backbone whose
    # size_divisibility is 0, e.g. ResNet).
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32

    # ---- point-sampled mask losses (PointRend-style importance sampling) ---------------------
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0  # k in PointRend
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75  # beta in PointRend
    # Labels in range, binary target masks and finite losses, read back once per step (one host
    # sync); False skips them for data known to be good.
    cfg.MODEL.MASK_FORMER.CHECK_VALUES = True

    # ---- pixel decoder -----------------------------------------------------------------------
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # Multi-scale deformable attention encoder of MSDeformAttnPixelDecoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # ---- Swin Transformer backbone (D2SwinTransformer) ---------------------------------------
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False

    # ---- InfluencerFormer: training criterion ------------------------------------------------
    # One of CRITERION_NAMES: "hungarian" (Mask2Former's matching baseline),
    # "reference" (mask-matrix Influencer loss), "ot" (entropic transport, no matching).
    cfg.MODEL.MASK_FORMER.CRITERION = "ot"
    # Mask-piloted training queries (MP-Former's idea; off): one extra training-only query per
    # ground-truth instance, fed its noised class embedding and its noised mask as attention mask,
    # scored with the known assignment by every criterion (so both arms get the same addition).
    # Adds the parameter sem_seg_head.predictor.label_enc.weight when on.
    cfg.MODEL.MASK_FORMER.PILOTED = CN()
    cfg.MODEL.MASK_FORMER.PILOTED.ENABLED = False
    cfg.MODEL.MASK_FORMER.PILOTED.LABEL_NOISE = 0.2  # probability of a random class
    cfg.MODEL.MASK_FORMER.PILOTED.MASK_NOISE = 0.2  # share of attention-mask pixels flipped
    # Hybrid query group (H-DETR's one-to-many branch; off): NUM_QUERIES extra training-only
    # queries run through the decoder beside the main ones (self-attention blocked between the
    # groups), every instance the target of up to CAPACITY of them (Hungarian: each target
    # repeated CAPACITY times; ot: instance capacity CAPACITY); not run at inference, so the
    # main queries and predictions are unchanged. Adds sem_seg_head.predictor.hybrid_query_feat
    # and hybrid_query_embed (absent from Mask2Former checkpoints) when on.
    cfg.MODEL.MASK_FORMER.HYBRID = CN()
    cfg.MODEL.MASK_FORMER.HYBRID.NUM_QUERIES = 0
    cfg.MODEL.MASK_FORMER.HYBRID.CAPACITY = 3
    cfg.MODEL.MASK_FORMER.INFLUENCER = CN()
    # Reference variant: weights of the attractive, repulsive and background terms, the
    # repulsion margin, the softmax temperature and the weight of the whole influencer term.
    cfg.MODEL.MASK_FORMER.INFLUENCER.ATTR_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.REP_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.BG_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.REP_MARGIN = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.TEMPERATURE = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.WEIGHT = 5.0
    # log(p + PROFILE_EPS) in the profiles keeps them finite
    cfg.MODEL.MASK_FORMER.INFLUENCER.PROFILE_EPS = 1e-6
    # repulsion between the profiles exp(S) in [0, 1] ("profile", the reference form) or between
    # the log-profiles S ("log_profile", the form of releases up to 0.1)
    cfg.MODEL.MASK_FORMER.INFLUENCER.REP_SPACE = "profile"
    # Transport variant: entropic regularisation, Sinkhorn iterations and the weight of the
    # exclusion term (an extra "no object" push on queries whose mask copies an instance the
    # plan gives to another query; 0 disables it). 0.5: on the 2D convergence study (3 seeds,
    # 500 fresh images) it kept PQ and mask AP level with Hungarian where 2.0 (the earlier
    # default, the class weight) suppressed good masks (docs/convergence_2d.md).
    # Class/mask/dice weights are the ones above.
    # The mask terms use MODEL.MASK_FORMER.OVERSAMPLE_RATIO / IMPORTANCE_SAMPLE_RATIO points, as
    # Mask2Former's loss does (the plan itself is computed on uniform points).
    cfg.MODEL.MASK_FORMER.INFLUENCER.EPSILON = 0.5
    cfg.MODEL.MASK_FORMER.INFLUENCER.SINKHORN_ITERS = 50
    # "log": the log-domain iterates, epsilon lowered every warm-up iteration; "scaling": epsilon
    # lowered in fewer steps (faster on CPU, same plan at convergence, not yet shown to train as
    # well; see influencer_core.transport.sinkhorn_plan).
    cfg.MODEL.MASK_FORMER.INFLUENCER.SINKHORN_METHOD = "log"
    cfg.MODEL.MASK_FORMER.INFLUENCER.EXCLUSION_WEIGHT = 0.5
    # A query counts as a copy of an instance above this dice coefficient with it.
    cfg.MODEL.MASK_FORMER.INFLUENCER.EXCLUSION_OVERLAP = 0.5
    # True: the exclusion term spares a query whose mask fits the instance better than the
    # instance's own queries do (it is left to the ordinary no-object loss).
    cfg.MODEL.MASK_FORMER.INFLUENCER.EXCLUSION_SPARE_BETTER = False
    # Class loss from the plan: "mass" (each unit of plan mass is a CE term, no-object mass
    # weighted by NO_OBJECT_WEIGHT) or "query" (one CE per query against its plan row as a soft
    # label, so a query's class probability estimates how much of an instance it owns).
    cfg.MODEL.MASK_FORMER.INFLUENCER.CLASS_TARGET = "query"
    # IoU-aware class targets (CLASS_TARGET "query"): the class share of a query's label times
    # dice(query mask, instance)^CLASS_QUALITY, the rest "no object"; 0: off.
    cfg.MODEL.MASK_FORMER.INFLUENCER.CLASS_QUALITY = 0.0
    # Label smoothing among the object classes: an instance's class label keeps 1 - s on its
    # class and spreads s over all classes ("no object" share unchanged); 0: off.
    cfg.MODEL.MASK_FORMER.INFLUENCER.CLASS_SMOOTHING = 0.0
    # Class part of the plan's cost: "ce" (the class loss; the no-object column costs its CE) or
    # "prob" (Mask2Former's matching cost -p(class); the no-object column costs 0).
    cfg.MODEL.MASK_FORMER.INFLUENCER.CLASS_COST = "ce"
    # Query mass each instance takes in the auxiliary decoder layers (1: one-to-one as in the
    # final layer; > 1: one-to-many supervision of the intermediate predictions).
    cfg.MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY = 1.0
    # Relaxed marginals (unbalanced transport): 0 keeps every instance's query mass at exactly
    # one; tau > 0 lets it grow above one where several queries are cheap for it (penalty tau * KL).
    cfg.MODEL.MASK_FORMER.INFLUENCER.MARGINAL_RELAX = 0.0
    # True: every decoder layer is supervised with the final layer's plan.
    cfg.MODEL.MASK_FORMER.INFLUENCER.REUSE_FINAL_PLAN = False
    # Epsilon annealing during training (influencer_core.schedules.EpsilonSchedule): "constant"
    # keeps EPSILON; "linear" / "cosine" / "exp" go from EPSILON to EPSILON_END between
    # EPSILON_WARMUP and SOLVER.MAX_ITER iterations (the trainer's EpsilonAnnealingHook).
    # Default: soft plan early (0.5), near one-to-one at the end (0.01), geometric in between.
    cfg.MODEL.MASK_FORMER.INFLUENCER.EPSILON_SCHEDULE = "exp"
    cfg.MODEL.MASK_FORMER.INFLUENCER.EPSILON_END = 0.01
    cfg.MODEL.MASK_FORMER.INFLUENCER.EPSILON_WARMUP = 0
    # AUX_CAPACITY annealing (influencer_core.schedules.CapacitySchedule), same kinds: from
    # AUX_CAPACITY to AUX_CAPACITY_END (>= 1) between AUX_CAPACITY_WARMUP and SOLVER.MAX_ITER, i.e.
    # extra positives for the intermediate layers early, one-to-one at the end. "constant": off.
    cfg.MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY_SCHEDULE = "constant"
    cfg.MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY_END = 1.0
    cfg.MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY_WARMUP = 0

    # ---- a COCO-format dataset of your own (tools/train_net.py registers it; configs/own-data.yaml) ----
    # NAME set: {NAME}_panoptic (PANOPTIC_JSON + PANOPTIC_ROOT) and/or {NAME}_instance (INSTANCES_JSON)
    # are registered at startup by influencerformer2d.data.datasets.register_coco_dataset; SEM_SEG_ROOT
    # empty: semantic PNGs are derived once into {PANOPTIC_ROOT}_semseg. DATASETS.TRAIN / TEST left at
    # OWN_DATA_PLACEHOLDER are set to them (OWN_VAL, same keys, is the test set; without it OWN is).
    for key in ("OWN", "OWN_VAL"):
        cfg.DATASETS[key] = CN()
        for field in ("NAME", "IMAGE_ROOT", "PANOPTIC_JSON", "PANOPTIC_ROOT", "SEM_SEG_ROOT", "INSTANCES_JSON"):
            cfg.DATASETS[key][field] = ""


# The value of DATASETS.TRAIN / DATASETS.TEST in configs/own-data.yaml that tools/train_net.py replaces
# by the datasets of DATASETS.OWN / OWN_VAL.
OWN_DATA_PLACEHOLDER = "own_data"


def load_config(config_file, opts=(), warn_cpu=False):
    """A detectron2 config with the DeepLab and InfluencerFormer2D keys: ``config_file``, then the
    ``KEY VALUE`` list ``opts``; DATASETS.OWN / OWN_VAL registered (see
    :func:`influencerformer2d.data.datasets.register_own_data`); a cuda MODEL.DEVICE becomes cpu
    when torch has no CUDA (``warn_cpu``: say so).  Not frozen."""
    import logging

    import torch
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from .data.datasets import register_own_data  # the data package imports this module

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    register_own_data(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        if warn_cpu:
            logging.getLogger("influencerformer2d").warning(
                "MODEL.DEVICE=%s but no CUDA device: running on the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg
