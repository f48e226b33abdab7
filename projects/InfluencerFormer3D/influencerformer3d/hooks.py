"""mmengine hooks of the InfluencerFormer3D plugin."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from influencer_core.schedules import CapacitySchedule, EpsilonSchedule

from .registry import register_hook

__all__ = ["CapacityAnnealingHook", "EpsilonAnnealingHook", "find_epsilon_owner", "find_schedule_owner"]


def find_schedule_owner(model, attr: str):
    """The criterion that owns ``attr`` (``epsilon``, ``aux_capacity``): ``model.criterion`` or, for
    the unified criteria, ``model.criterion.inst_criterion``; None if there is none."""
    if is_model_wrapper(model):
        model = model.module
    criterion = getattr(model, 'criterion', None)
    for obj in (criterion, getattr(criterion, 'inst_criterion', None)):
        if obj is not None and hasattr(obj, attr):
            return obj
    return None


def find_epsilon_owner(model):
    """The criterion whose ``epsilon`` drives the transport plan (see :func:`find_schedule_owner`)."""
    return find_schedule_owner(model, 'epsilon')


class _CriterionScheduleHook(Hook):
    """Sets the criterion's ``attr`` to ``schedule_cls(start, end, max_iter, kind, warmup)(runner.iter)``
    before every training iteration and logs it as ``train/<attr>``; ``max_iter`` defaults to the
    loop's ``max_iters``, so it works with epoch- and iteration-based loops."""

    priority = 'NORMAL'
    attr = schedule_cls = needs = None  # set by the subclasses

    def __init__(self, start: float, end: float, kind: str, warmup: int = 0, max_iter=None):
        self.start, self.end, self.kind, self.warmup, self.max_iter = start, end, kind, warmup, max_iter
        self.schedule = None

    def before_train(self, runner) -> None:
        if find_schedule_owner(runner.model, self.attr) is None:
            raise ValueError(f'{type(self).__name__} needs a criterion with {self.needs} (InfluencerCriterion with '
                             "variant='ot'); remove the hook from custom_hooks for this model")
        max_iter = self.max_iter if self.max_iter is not None else runner.max_iters
        self.schedule = self.schedule_cls(self.start, self.end, max_iter, self.kind, self.warmup)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        value = self.schedule(runner.iter)
        setattr(find_schedule_owner(runner.model, self.attr), self.attr, value)
        runner.message_hub.update_scalar(f'train/{self.attr}', value)


@register_hook()
class EpsilonAnnealingHook(_CriterionScheduleHook):
    """Anneal the transport temperature of ``InfluencerCriterion(variant='ot')`` during training:
    ``epsilon = EpsilonSchedule(start, end, max_iter, kind, warmup)(runner.iter)``, logged as
    ``epsilon``. Config::

        custom_hooks = [dict(type='EpsilonAnnealingHook', start=0.5, end=0.01, kind='exp')]
    """

    attr, schedule_cls, needs = 'epsilon', EpsilonSchedule, 'an epsilon'

    def __init__(self, start: float, end: float, kind: str = 'exp', warmup: int = 0, max_iter=None):
        super().__init__(start, end, kind, warmup, max_iter)


@register_hook()
class CapacityAnnealingHook(_CriterionScheduleHook):
    """Anneal ``aux_capacity`` of ``InfluencerCriterion(variant='ot')``: the query mass each instance
    takes in the auxiliary decoder layers, from ``start`` (one-to-many: extra positives early) to
    ``end`` (1: one-to-one like the final layer), logged as ``aux_capacity``. Config::

        custom_hooks = [dict(type='CapacityAnnealingHook', start=3.0, end=1.0, kind='linear')]
    """

    attr, schedule_cls, needs = 'aux_capacity', CapacitySchedule, 'aux_capacity'

    def __init__(self, start: float, end: float = 1.0, kind: str = 'linear', warmup: int = 0, max_iter=None):
        super().__init__(start, end, kind, warmup, max_iter)
