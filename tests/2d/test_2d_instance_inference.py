"""Instance inference: Mask2Former's top-k over query x class pairs (the default) and the
MODEL.MASK_FORMER.TEST.ONE_CLASS_PER_QUERY option (each query reported once, under its best class)."""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

from influencerformer2d import add_influencerformer_config
from influencerformer2d.influencerformer_model import top_query_classes
from tests import ROOT

SYNTHETIC = os.path.join(ROOT, "projects", "InfluencerFormer2D", "configs", "synthetic.yaml")


def _model(*opts):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_influencerformer_config(cfg)
    cfg.merge_from_file(SYNTHETIC)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 8, *opts])
    return build_model(cfg).eval()


def _pairs(scores, labels, query):
    return sorted(zip(query.tolist(), labels.tolist(), [round(s, 6) for s in scores.tolist()]))


def test_default_is_the_top_k_over_all_query_class_pairs():
    scores = torch.rand(12, 5)
    scores[3, 1] = scores[3, 4] = 2.0  # query 3 is the best pair twice
    got = _pairs(*top_query_classes(scores, 10))
    # brute force: every (query, class) pair, best 10 by score
    every = sorted(((s, q, c) for q, row in enumerate(scores.tolist()) for c, s in enumerate(row)), reverse=True)
    assert got == sorted((q, c, round(s, 6)) for s, q, c in every[:10])
    assert [q for q, _, _ in got].count(3) >= 2  # Mask2Former's behaviour: a query under two classes


@pytest.mark.parametrize("k", [5, 12, 100])
def test_one_class_per_query_reports_each_query_once_under_its_best_class(k):
    scores = torch.rand(12, 5)
    scores[3, 1] = scores[3, 4] = 2.0
    top, labels, query = top_query_classes(scores, k, one_class_per_query=True)
    assert len(query) == min(k, 12) and query.unique().numel() == len(query)
    best, argbest = scores.max(-1)
    assert torch.equal(labels, argbest[query]) and torch.equal(top, best[query])
    assert set(query.tolist()) == set(best.topk(min(k, 12)).indices.tolist())  # the k queries scored best


def _logits_and_masks(num_classes):
    """Class logits for 8 queries (query 0 split between two thing classes, query 1 a stuff
    class) and mask logits whose area is q + 1 pixels for query q, so a mask names its query."""
    logits = torch.full((8, num_classes + 1), -5.0)
    for q in range(8):
        logits[q, q % 6] = 5.0  # thing classes are 0..5 in the synthetic metadata
    logits[0, 0] = logits[0, 1] = 5.0
    logits[1, :] = -5.0
    logits[1, 7] = 5.0  # a stuff class (6..8)
    masks = torch.full((8, 16, 16), -10.0)
    for q in range(8):
        masks[q].view(-1)[: q + 1] = 10.0
    return logits, masks


def _queries(instances):
    return (instances.pred_masks.flatten(1).sum(1).long() - 1).tolist()


def test_instance_inference_with_and_without_the_option():
    default = _model()
    assert not default.one_class_per_query  # default unchanged: Mask2Former's inference
    logits, masks = _logits_and_masks(default.sem_seg_head.num_classes)
    queries = _queries(default.instance_inference(logits, masks))
    assert queries.count(0) == 2  # query 0 under classes 0 and 1
    assert 1 in queries  # the stuff query still comes back under some thing class (low score)

    one = _model("MODEL.MASK_FORMER.TEST.ONE_CLASS_PER_QUERY", True)
    inst = one.instance_inference(logits, masks)
    queries = _queries(inst)
    assert sorted(queries) == [0, 2, 3, 4, 5, 6, 7]  # each once; the stuff query gives no instance
    classes = dict(zip(queries, inst.pred_classes.tolist()))
    assert all(classes[q] == q % 6 for q in queries if q) and classes[0] in (0, 1)
