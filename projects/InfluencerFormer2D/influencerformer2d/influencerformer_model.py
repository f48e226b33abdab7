"""The InfluencerFormer meta-architecture: Mask2Former's model, the loss chosen by name.

Inputs are detectron2 dataset-mapper dicts; in training the model returns
weighted losses, in inference the same per-image results as Mask2Former
(``sem_seg``, ``panoptic_seg``, ``instances``).
"""
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.memory import retry_if_cuda_oom

from influencer_core import CRITERIA, build_criterion, canonical_criterion_name, criterion_options
from influencer_core.timing import DeviceTimer

from .config import CRITERION_OPTION_KEYS

__all__ = ["InfluencerFormer", "build_criterion_from_cfg", "top_query_classes"]


def build_criterion_from_cfg(cfg, num_classes: int):
    """The criterion named by ``MODEL.MASK_FORMER.CRITERION``; every option it takes comes from
    its config key in :data:`~influencerformer2d.config.CRITERION_OPTION_KEYS`."""
    mf = cfg.MODEL.MASK_FORMER
    try:
        name = canonical_criterion_name(mf.CRITERION)
    except KeyError:
        raise ValueError(f"MODEL.MASK_FORMER.CRITERION={mf.CRITERION!r}; choose one of {sorted(CRITERIA)}") from None
    kwargs = {}
    for option in criterion_options(CRITERIA[name]):
        key = CRITERION_OPTION_KEYS.get(option)
        if key is None:  # objectness options, or an option of a user's criterion: its default
            continue
        node = mf
        for part in key.split("."):
            node = node[part]
        kwargs[option] = node
    return build_criterion(name, num_classes=num_classes, **kwargs)


def top_query_classes(scores: torch.Tensor, k: int, one_class_per_query: bool = False):
    """The k best (query, class) pairs of class probabilities ``scores`` [Q, C] (no-object dropped).

    Default (Mask2Former): top-k over all Q x C pairs, so a query can come back under several
    classes. ``one_class_per_query``: each query keeps only its best class, then the top-k queries.
    Returns (scores [k'], labels [k'], query indices [k']) with k' = min(k, Q x C) or min(k, Q).
    """
    num_queries, num_classes = scores.shape
    if one_class_per_query:
        best, labels = scores.max(-1)
        top_scores, query = best.topk(min(k, num_queries), sorted=False)
        return top_scores, labels[query], query
    top_scores, top_idx = scores.flatten().topk(min(k, scores.numel()), sorted=False)
    return top_scores, top_idx % num_classes, torch.div(top_idx, num_classes, rounding_mode="floor")


@META_ARCH_REGISTRY.register()
class InfluencerFormer(nn.Module):
    """Mask2Former-style mask classification model; the criterion comes from influencer_core.

    Parameter names equal Mask2Former's (``backbone.*``, ``sem_seg_head.*``,
    ``criterion.empty_weight``) so its checkpoints load with ``strict=True``.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module, criterion: nn.Module,
                 weight_dict: Dict[str, float], num_queries: int, object_mask_threshold: float,
                 overlap_threshold: float, metadata, size_divisibility: int,
                 sem_seg_postprocess_before_inference: bool, pixel_mean: Tuple[float], pixel_std: Tuple[float],
                 semantic_on: bool, panoptic_on: bool, instance_on: bool, test_topk_per_image: int,
                 one_class_per_query: bool = False, piloted: bool = False):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.weight_dict = dict(weight_dict)
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.one_class_per_query = one_class_per_query
        self.piloted = piloted  # training-only mask-piloted queries (MODEL.MASK_FORMER.PILOTED)
        self.pending_scalars: Dict[str, object] = {}
        if not semantic_on and not sem_seg_postprocess_before_inference:
            raise ValueError("SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE must be on unless SEMANTIC_ON")

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        criterion = build_criterion_from_cfg(cfg, sem_seg_head.num_classes)
        num_aux = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1 if cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION else 0
        test = cfg.MODEL.MASK_FORMER.TEST
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            # optional=True adds the piloted queries' and the hybrid group's losses (and the unused
            # loss_score)
            "weight_dict": criterion.weight_dict_for(num_aux, optional=cfg.MODEL.MASK_FORMER.PILOTED.ENABLED
                                                     or cfg.MODEL.MASK_FORMER.HYBRID.NUM_QUERIES > 0),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "one_class_per_query": test.ONE_CLASS_PER_QUERY,
            "piloted": cfg.MODEL.MASK_FORMER.PILOTED.ENABLED,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def pop_scalars(self) -> Dict[str, float]:
        """The statistics of the training forwards since the last call (criterion entries that
        are not losses, ``time/criterion_forward``) as floats. They are kept as device tensors /
        CUDA events until then, so the step itself never waits for the GPU: call it after the
        step (``ModelScalarsHook`` does)."""
        out = {k: float(v) for k, v in self.pending_scalars.items()}
        self.pending_scalars.clear()
        return out

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of weighted losses. Inference: list of per-image result dicts."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        if not self.training:
            return self.inference(self.sem_seg_head(self.backbone(images.tensor)), batched_inputs, images)
        if "instances" not in batched_inputs[0]:
            raise ValueError("training needs 'instances' in every input: use a mapper that produces them")
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs], images)
        outputs = self.sem_seg_head(self.backbone(images.tensor), targets=targets if self.piloted else None)
        watch = DeviceTimer(self.device)
        losses = self.criterion(outputs, targets)
        self.pending_scalars["time/criterion_forward"] = watch.stop()
        return self.weighted_losses(losses)

    def weighted_losses(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Weights every ``loss_*`` term; other entries go to ``pending_scalars``, not summed."""
        out = {}
        for key, value in losses.items():
            if not key.startswith("loss_"):
                self.pending_scalars[f"criterion/{key}"] = value.detach() if torch.is_tensor(value) else value
                continue
            if key not in self.weight_dict:
                raise KeyError(f"loss '{key}' has no weight in weight_dict {sorted(self.weight_dict)}: "
                               "check MODEL.MASK_FORMER.DEC_LAYERS and DEEP_SUPERVISION")
            out[key] = value * self.weight_dict[key]
        return out

    def prepare_targets(self, instances: List[Instances], images: ImageList) -> List[Dict]:
        """Per-image {'labels' [K], 'masks' [K, H_pad, W_pad]} with masks padded like the images."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for inst in instances:
            masks = inst.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            padded = masks.new_zeros((masks.shape[0], h_pad, w_pad))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": inst.gt_classes, "masks": padded})
        return targets

    # ---- inference (as Mask2Former) --------------------------------------------------
    def inference(self, outputs, batched_inputs, images):
        mask_pred = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear",
                                  align_corners=False)
        results = []
        for mask_cls, mask, inp, image_size in zip(outputs["pred_logits"], mask_pred, batched_inputs,
                                                   images.image_sizes):
            height = inp.get("height", image_size[0])
            width = inp.get("width", image_size[1])
            res = {}
            if self.sem_seg_postprocess_before_inference:
                mask = retry_if_cuda_oom(sem_seg_postprocess)(mask, image_size, height, width)
                mask_cls = mask_cls.to(mask)
            if self.semantic_on:
                r = retry_if_cuda_oom(self.semantic_inference)(mask_cls, mask)
                if not self.sem_seg_postprocess_before_inference:
                    r = retry_if_cuda_oom(sem_seg_postprocess)(r, image_size, height, width)
                res["sem_seg"] = r
            if self.panoptic_on:
                res["panoptic_seg"] = retry_if_cuda_oom(self.panoptic_inference)(mask_cls, mask)
            if self.instance_on:
                res["instances"] = retry_if_cuda_oom(self.instance_inference)(mask_cls, mask)
            results.append(res)
        return results

    def semantic_inference(self, mask_cls, mask_pred):
        """[Q, C+1], [Q, H, W] -> per-class scores [C, H, W]."""
        return torch.einsum("qc,qhw->chw", F.softmax(mask_cls, dim=-1)[..., :-1], mask_pred.sigmoid())

    def _thing_ids(self):
        meta = self.metadata
        return set(getattr(meta, "thing_dataset_id_to_contiguous_id", {}).values()) if meta is not None else set()

    def panoptic_inference(self, mask_cls, mask_pred):
        """Keep confident non-void queries, assign pixels by score-weighted mask, drop
        segments mostly covered by others, merge stuff of one class.

        Returns (panoptic_seg [H, W] int32, segments_info)."""
        scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
        probs = mask_pred.sigmoid()
        keep = labels.ne(self.sem_seg_head.num_classes) & (scores > self.object_mask_threshold)
        cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], probs[keep]
        h, w = cur_masks.shape[-2:]
        panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
        segments_info = []
        if cur_masks.shape[0] == 0:
            return panoptic_seg, segments_info
        owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
        things = self._thing_ids()
        stuff_segment = {}
        segment_id = 0
        for k in range(cur_classes.shape[0]):
            pred_class = int(cur_classes[k])
            isthing = pred_class in things
            owned = owner == k
            confident = cur_masks[k] >= 0.5
            mask = owned & confident
            owned_area, conf_area, area = int(owned.sum()), int(confident.sum()), int(mask.sum())
            if owned_area == 0 or conf_area == 0 or area == 0:
                continue
            if owned_area / conf_area < self.overlap_threshold:
                continue
            if not isthing:
                if pred_class in stuff_segment:
                    panoptic_seg[mask] = stuff_segment[pred_class]
                    continue
                stuff_segment[pred_class] = segment_id + 1
            segment_id += 1
            panoptic_seg[mask] = segment_id
            segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": pred_class})
        return panoptic_seg, segments_info

    def instance_inference(self, mask_cls, mask_pred):
        """Top-k (query, class) pairs scored by class prob x mean mask prob inside the mask
        (one class per query with ``one_class_per_query``, see :func:`top_query_classes`).

        [Q, C+1], [Q, H, W] -> Instances with pred_masks, pred_boxes (zeros), scores, pred_classes."""
        scores = F.softmax(mask_cls, dim=-1)[:, :-1]
        top_scores, top_labels, query = top_query_classes(scores, self.test_topk_per_image, self.one_class_per_query)
        masks = mask_pred[query]
        if self.panoptic_on:  # panoptic models: instances are the thing classes only
            things = torch.tensor(sorted(self._thing_ids()), device=mask_cls.device, dtype=torch.long)
            keep = torch.isin(top_labels, things)
            top_scores, top_labels, masks = top_scores[keep], top_labels[keep], masks[keep]
        result = Instances(mask_pred.shape[-2:])
        result.pred_masks = (masks > 0).float()
        result.pred_boxes = Boxes(torch.zeros(masks.shape[0], 4, device=masks.device))
        flat = result.pred_masks.flatten(1)
        mask_scores = (masks.sigmoid().flatten(1) * flat).sum(1) / (flat.sum(1) + 1e-6)
        result.scores = top_scores * mask_scores
        result.pred_classes = top_labels
        return result
