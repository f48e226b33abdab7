"""Training hooks of InfluencerFormer2D."""
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from influencer_core.schedules import CapacitySchedule, EpsilonSchedule, Schedule

__all__ = ["CapacityAnnealingHook", "CriterionScheduleHook", "EpsilonAnnealingHook", "ModelScalarsHook",
           "capacity_schedule_from_cfg", "epsilon_schedule_from_cfg", "unwrap_model"]


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _schedule_from_cfg(cfg, schedule_cls, key):
    """``schedule_cls`` from ``MODEL.MASK_FORMER.INFLUENCER.{key}`` (start), ``{key}_END``,
    ``{key}_SCHEDULE`` and ``{key}_WARMUP`` over ``SOLVER.MAX_ITER``, or None when constant."""
    inf = cfg.MODEL.MASK_FORMER.INFLUENCER
    if inf[f"{key}_SCHEDULE"] == "constant":
        return None
    return schedule_cls(inf[key], inf[f"{key}_END"], cfg.SOLVER.MAX_ITER, inf[f"{key}_SCHEDULE"], inf[f"{key}_WARMUP"])


def epsilon_schedule_from_cfg(cfg):
    """The ``EpsilonSchedule`` of ``MODEL.MASK_FORMER.INFLUENCER.EPSILON*``, or None when constant."""
    return _schedule_from_cfg(cfg, EpsilonSchedule, "EPSILON")


def capacity_schedule_from_cfg(cfg):
    """The ``CapacitySchedule`` of ``MODEL.MASK_FORMER.INFLUENCER.AUX_CAPACITY*``, or None when constant."""
    return _schedule_from_cfg(cfg, CapacitySchedule, "AUX_CAPACITY")


class CriterionScheduleHook(HookBase):
    """Sets ``model.criterion.<attr> = schedule(iter)`` before every step and logs it as
    ``criterion/<attr>``.

    Fails at the start of training if the criterion has no such attribute (e.g. ``hungarian``):
    a schedule that would silently do nothing is a configuration error.
    """

    def __init__(self, attr: str, schedule: Schedule, key: str):
        self.attr, self.schedule, self.key = attr, schedule, key

    def _criterion(self):
        criterion = getattr(unwrap_model(self.trainer.model), "criterion", None)
        if criterion is None or not hasattr(criterion, self.attr):
            raise ValueError(
                f"MODEL.MASK_FORMER.INFLUENCER.{self.key}={self.schedule.kind!r} needs a criterion with "
                f"{self.attr} (the ot criterion), got {type(criterion).__name__}: set {self.key} 'constant'")
        return criterion

    def before_train(self):
        self._criterion()

    def before_step(self):
        value = self.schedule(self.trainer.iter)
        setattr(self._criterion(), self.attr, value)
        self.trainer.storage.put_scalar(f"criterion/{self.attr}", value, smoothing_hint=False)


class EpsilonAnnealingHook(CriterionScheduleHook):
    """``criterion.epsilon`` from an :class:`EpsilonSchedule` (``INFLUENCER.EPSILON_SCHEDULE``)."""

    def __init__(self, schedule: EpsilonSchedule):
        super().__init__("epsilon", schedule, "EPSILON_SCHEDULE")


class CapacityAnnealingHook(CriterionScheduleHook):
    """``criterion.aux_capacity`` from a :class:`CapacitySchedule` (``INFLUENCER.AUX_CAPACITY_SCHEDULE``)."""

    def __init__(self, schedule: CapacitySchedule):
        super().__init__("aux_capacity", schedule, "AUX_CAPACITY_SCHEDULE")


class ModelScalarsHook(HookBase):
    """After every step, logs the model's ``pop_scalars()`` (criterion statistics and time),
    which the forward keeps on the device so that the step has no host synchronisation."""

    def after_step(self):
        pop = getattr(unwrap_model(self.trainer.model), "pop_scalars", None)
        if pop is not None:
            for name, value in pop().items():
                self.trainer.storage.put_scalar(name, value)
