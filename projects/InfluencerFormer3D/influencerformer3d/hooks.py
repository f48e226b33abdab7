"""mmengine hooks of the InfluencerFormer3D plugin."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from influencer_core.schedules import EpsilonSchedule

from .registry import register_hook

__all__ = ["EpsilonAnnealingHook", "find_epsilon_owner"]


def find_epsilon_owner(model):
    """The criterion whose ``epsilon`` drives the transport plan: ``model.criterion`` or, for the
    unified criteria, ``model.criterion.inst_criterion``; None if there is none."""
    if is_model_wrapper(model):
        model = model.module
    criterion = getattr(model, 'criterion', None)
    for obj in (criterion, getattr(criterion, 'inst_criterion', None)):
        if obj is not None and hasattr(obj, 'epsilon'):
            return obj
    return None


@register_hook()
class EpsilonAnnealingHook(Hook):
    """Anneal the transport temperature of ``InfluencerCriterion(variant='ot')`` during training.

    ``epsilon = EpsilonSchedule(start, end, max_iter, kind, warmup)(runner.iter)`` is set before
    every training iteration (``max_iter`` defaults to the loop's ``max_iters``, so it works with
    epoch- and iteration-based loops) and logged as ``epsilon``. Config::

        custom_hooks = [dict(type='EpsilonAnnealingHook', start=0.5, end=0.01, kind='exp')]
    """

    priority = 'NORMAL'

    def __init__(self, start: float, end: float, kind: str = 'exp', warmup: int = 0, max_iter=None):
        self.start, self.end, self.kind, self.warmup, self.max_iter = start, end, kind, warmup, max_iter
        self.schedule = None

    def before_train(self, runner) -> None:
        if find_epsilon_owner(runner.model) is None:
            raise ValueError('EpsilonAnnealingHook needs a criterion with an epsilon (InfluencerCriterion with '
                             "variant='ot'); remove the hook from custom_hooks for this model")
        max_iter = self.max_iter if self.max_iter is not None else runner.max_iters
        self.schedule = EpsilonSchedule(self.start, self.end, max_iter, self.kind, self.warmup)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        eps = self.schedule(runner.iter)
        find_epsilon_owner(runner.model).epsilon = eps
        runner.message_hub.update_scalar('train/epsilon', eps)
