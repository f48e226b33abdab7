"""Hybrid query group of the S3DIS decoder (training-only one-to-many queries, H-DETR's branch):
the main predictions are those of the same decoder without it, the group is trained by both
criteria, absent at test time, and checkpoints load across the two layouts."""
import copy

import pytest
import torch

pytest.importorskip('spconv.pytorch')

from mmdet3d.registry import MODELS  # noqa: E402

from influencerformer3d.checkpoint import load_oneformer3d_checkpoint  # noqa: E402
from test_3d_detector import batch, build, tiny_decoder, tiny_s3dis, total  # noqa: E402

C = 4


def _decoder(**kw):
    return MODELS.build(dict(type='QueryDecoder', num_classes=C, num_instance_queries=6, num_semantic_queries=C,
                             objectness_flag=True, **tiny_decoder(**kw)))


def test_group_runs_in_training_only_and_leaves_the_main_queries_alone():
    torch.manual_seed(0)
    plain = _decoder()
    hybrid = _decoder(num_hybrid_queries=5)
    missing = hybrid.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ['hybrid_query.weight']
    x = [torch.randn(n, 8) for n in (23, 31)]
    hybrid.train()
    plain.train()  # dropout 0: training mode is deterministic
    out, ref = hybrid(x), plain(x)
    group = out.pop('hybrid')
    for a, b in zip([out] + out['aux_outputs'], [ref] + ref['aux_outputs']):
        for key in ('cls_preds', 'masks', 'scores'):
            for u, v in zip(a[key], b[key]):
                assert torch.equal(u, v), key
    assert len(group['aux_outputs']) == len(ref['aux_outputs'])
    for layer in [group] + group['aux_outputs']:
        assert [m.shape for m in layer['masks']] == [(5, 23), (5, 31)]
        assert [c.shape for c in layer['cls_preds']] == [(5, C + 1)] * 2
        assert [s.shape for s in layer['scores']] == [(5, 1)] * 2
    assert 'hybrid' not in hybrid.eval()(x)


def test_group_needs_learned_queries():
    with pytest.raises(ValueError, match='needs learned instance queries'):
        MODELS.build(dict(type='QueryDecoder', num_classes=C, num_instance_queries=0, num_semantic_queries=0,
                          objectness_flag=False, num_hybrid_queries=4, **tiny_decoder()))
    with pytest.raises(ValueError, match='int >= 0'):
        _decoder(num_hybrid_queries=-1)
    with pytest.raises(NotImplementedError, match='num_hybrid_queries=0'):
        MODELS.build(dict(type='ScanNetQueryDecoder', num_instance_queries=0, num_semantic_queries=0,
                          num_instance_classes=2, num_semantic_classes=C, num_semantic_linears=1,
                          objectness_flag=False, num_hybrid_queries=4, **tiny_decoder()))


@pytest.mark.parametrize('kind', ['hungarian', 'influencer'])
def test_both_criteria_train_the_group(kind):
    torch.manual_seed(0)
    cfg = tiny_s3dis(kind)
    cfg['decoder']['num_hybrid_queries'] = 9
    model = build(cfg).train()
    inputs, samples = batch('s3dis')
    loss = total(model(inputs, samples, mode='loss'))
    stats = model.criterion.inst_criterion.last_stats
    assert {'loss_ce_hy', 'loss_mask_hy', 'loss_dice_hy', 'loss_score_hy'} <= set(stats)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.decoder.hybrid_query.weight.grad.abs().sum() > 0
    # the group adds to the loss: without it (same weights) the loss is lower
    plain = build(tiny_s3dis(kind)).train()
    load_oneformer3d_checkpoint(plain, model.state_dict())  # strict: the group's key is training-only
    torch.manual_seed(1)
    with torch.no_grad():
        base = total(plain(*batch('s3dis'), mode='loss'))
        torch.manual_seed(1)
        both = total(model(*batch('s3dis'), mode='loss'))
    assert both > base


def test_checkpoints_load_both_ways_strictly():
    cfg = tiny_s3dis('influencer')
    plain = build(cfg)
    cfg_h = copy.deepcopy(cfg)
    cfg_h['decoder']['num_hybrid_queries'] = 3
    hybrid = build(cfg_h)
    res = load_oneformer3d_checkpoint(hybrid, plain.state_dict())
    assert res.missing_keys == ['decoder.hybrid_query.weight']
    res = load_oneformer3d_checkpoint(plain, hybrid.state_dict())
    assert res.unexpected_keys == ['decoder.hybrid_query.weight']
    bad = dict(plain.state_dict())
    bad.pop('decoder.out_cls.0.weight')
    with pytest.raises(RuntimeError, match='out_cls'):
        load_oneformer3d_checkpoint(hybrid, bad)
