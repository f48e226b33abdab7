"""InfluencerFormer3D EpsilonAnnealingHook and CapacityAnnealingHook (mmengine) on a stand-in runner."""
import types

import pytest
import torch

import influencerformer3d  # noqa: F401
from mmdet3d.registry import HOOKS, MODELS
from mmengine.logging import MessageHub


def _runner(criterion, max_iters=8):
    model = torch.nn.Module()
    model.criterion = criterion
    return types.SimpleNamespace(model=model, max_iters=max_iters, iter=0,
                                 message_hub=MessageHub.get_instance('test_3d_hooks'))


def test_hook_anneals_the_influencer_criterion_inside_a_unified_criterion():
    inst = MODELS.build(dict(type='InfluencerCriterion', num_classes=3, variant='ot', epsilon=0.3))
    unified = torch.nn.Module()
    unified.inst_criterion = inst
    runner = _runner(unified)
    hook = HOOKS.build(dict(type='EpsilonAnnealingHook', start=0.4, end=0.025, kind='exp'))
    hook.before_train(runner)
    seen = []
    for it in range(9):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(inst.epsilon)
    assert seen[0] == pytest.approx(0.4) and seen[4] == pytest.approx(0.1) and seen[8] == pytest.approx(0.025)
    assert runner.message_hub.get_scalar('train/epsilon').current() == pytest.approx(0.025)


def test_hook_refuses_a_criterion_without_epsilon():
    runner = _runner(MODELS.build(dict(
        type='HungarianInstanceCriterion', num_classes=3, non_object_weight=0.05, loss_weight=[0.5, 1.0, 1.0, 0.5],
        fix_dice_loss_weight=True, iter_matcher=True,
        matcher=dict(type='HungarianMatcher', costs=[dict(type='QueryClassificationCost', weight=0.5)]))))
    hook = HOOKS.build(dict(type='EpsilonAnnealingHook', start=0.4, end=0.025))
    with pytest.raises(ValueError, match='custom_hooks'):
        hook.before_train(runner)


def test_capacity_hook_anneals_aux_capacity_to_one_to_one():
    crit = MODELS.build(dict(type='InfluencerCriterion', num_classes=3, variant='ot', aux_capacity=3.0))
    runner = _runner(crit, max_iters=4)
    hook = HOOKS.build(dict(type='CapacityAnnealingHook', start=3.0, end=1.0, kind='linear'))
    hook.before_train(runner)
    seen = []
    for it in range(5):
        runner.iter = it
        hook.before_train_iter(runner, it)
        seen.append(crit.core.aux_capacity)
    assert seen == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0])
    assert runner.message_hub.get_scalar('train/aux_capacity').current() == pytest.approx(1.0)
    reference = MODELS.build(dict(type='InfluencerCriterion', num_classes=3, variant='reference'))
    with pytest.raises(ValueError, match='custom_hooks'):
        hook.before_train(_runner(reference))
