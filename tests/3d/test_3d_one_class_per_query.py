"""test_cfg.one_class_per_query and class_temperature of the 3D instance inference (detector._instances, shared by the
S3DIS and ScanNet models): off (default, upstream), a query whose class probability is split
between two classes is reported twice with the same mask; on, once, under its most probable
class, scored by that probability times its objectness."""
import types

import pytest
import torch
from mmengine.config import ConfigDict

pytest.importorskip('spconv.pytorch')

from influencerformer3d.models.detector import S3DISOneFormer3D, ScanNetOneFormer3D  # noqa: E402

N_CLS = 3
# query 0: classes 0 and 1 almost equally likely; query 1: class 2; query 2: mostly "no object"
CLS_LOGITS = torch.tensor([[5.0, 4.9, -5.0, -5.0], [-5.0, -5.0, 5.0, -5.0], [-2.0, -3.0, -3.0, 4.0]])
MASK_LOGITS = torch.full((3, 12), -10.0)
MASK_LOGITS[0, :5] = MASK_LOGITS[1, 5:10] = MASK_LOGITS[2, 10:] = 10.0


def _instances(obj, one_class_per_query=None, topk=6, **extra):
    cfg = dict(topk_insts=topk, sp_score_thr=0.5, npoint_thr=0, nms=False, obj_normalization=False, **extra)
    if one_class_per_query is not None:
        cfg['one_class_per_query'] = one_class_per_query
    owner = types.SimpleNamespace(test_cfg=ConfigDict(cfg), num_classes=N_CLS)
    masks, labels, scores = S3DISOneFormer3D._instances(owner, CLS_LOGITS, obj, MASK_LOGITS,
                                                         torch.arange(12), score_threshold=0.0)
    order = scores.argsort(descending=True)
    return masks[order], labels[order], scores[order]


def _query_of(masks):
    """Which query's mask each instance is: its first point (0 -> 0, 5 -> 1, 10 -> 2)."""
    return [{0: 0, 5: 1, 10: 2}[int(m.float().argmax())] for m in masks]


def test_default_reports_a_query_under_several_classes():
    obj = torch.ones(3, 1)
    for flag in (None, False):  # default unchanged
        masks, labels, scores = _instances(obj, flag)
        pairs = list(zip(_query_of(masks), labels.tolist()))
        assert pairs[:3] == [(1, 2), (0, 0), (0, 1)]  # query 0's mask twice, as class 0 and 1
        probs = torch.softmax(CLS_LOGITS, -1)
        torch.testing.assert_close(scores[:3], torch.stack([probs[1, 2], probs[0, 0], probs[0, 1]]))


def test_one_class_per_query_reports_each_query_once():
    obj = torch.tensor([[0.8], [0.5], [0.9]])
    masks, labels, scores = _instances(obj, True)
    queries = _query_of(masks)
    assert sorted(queries) == [0, 1, 2]  # each query once
    assert dict(zip(queries, labels.tolist())) == {0: 0, 1: 2, 2: 0}
    probs = torch.softmax(CLS_LOGITS, -1)[:, :-1]
    torch.testing.assert_close(scores, (probs.max(1).values * obj[:, 0])[queries])
    # topk counts queries now: 2 of the 3
    masks, labels, _ = _instances(obj, True, topk=2)
    assert sorted(_query_of(masks)) == [0, 1]


def test_negative_objectness_keeps_the_most_probable_class():
    """Early in training objectness is negative: the product with it would favour the least
    probable class, so the label comes from the class probabilities alone."""
    obj = torch.tensor([[-0.5], [-0.5], [-0.5]])
    owner = types.SimpleNamespace(
        test_cfg=ConfigDict(topk_insts=6, sp_score_thr=0.5, npoint_thr=0, nms=False, one_class_per_query=True),
        num_classes=N_CLS)
    _, labels, scores = ScanNetOneFormer3D._instances(owner, CLS_LOGITS, obj, MASK_LOGITS, torch.arange(12),
                                                      score_threshold=-1.0)
    assert sorted(labels.tolist()) == [0, 0, 2] and (scores < 0).all()


def test_class_temperature_scores_with_the_flattened_softmax():
    """class_temperature T: scores are softmax(logits / T); T = 1 is the default, T > 1 lifts
    every query's runner-up classes, T <= 0 is an error."""
    obj = torch.ones(3, 1)
    default = _instances(obj)
    same = _instances(obj, class_temperature=1.0)
    for a, b in zip(default, same):
        assert torch.equal(a, b)
    _, labels, scores = _instances(obj, topk=12, class_temperature=4.0)
    probs = torch.softmax(CLS_LOGITS / 4.0, -1)[:, :-1]
    torch.testing.assert_close(scores, probs.flatten().sort(descending=True).values)
    assert scores.min() > torch.softmax(CLS_LOGITS, -1)[:, :-1].min()  # the tail is lifted
    with pytest.raises(ValueError, match='class_temperature'):
        _instances(obj, class_temperature=0.0)
