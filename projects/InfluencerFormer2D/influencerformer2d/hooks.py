"""Training hooks of InfluencerFormer2D."""
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from influencer_core.schedules import EpsilonSchedule

__all__ = ["EpsilonAnnealingHook", "ModelScalarsHook", "epsilon_schedule_from_cfg", "unwrap_model"]


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def epsilon_schedule_from_cfg(cfg):
    """The ``EpsilonSchedule`` of ``MODEL.MASK_FORMER.INFLUENCER.EPSILON*``, or None when constant."""
    inf = cfg.MODEL.MASK_FORMER.INFLUENCER
    if inf.EPSILON_SCHEDULE == "constant":
        return None
    return EpsilonSchedule(inf.EPSILON, inf.EPSILON_END, cfg.SOLVER.MAX_ITER, inf.EPSILON_SCHEDULE,
                           inf.EPSILON_WARMUP)


class EpsilonAnnealingHook(HookBase):
    """Sets ``model.criterion.epsilon = schedule(iter)`` before every step and logs it.

    Fails at the start of training if the criterion has no ``epsilon`` (e.g. ``hungarian``):
    an annealing schedule that would silently do nothing is a configuration error.
    """

    def __init__(self, schedule: EpsilonSchedule):
        self.schedule = schedule

    def _criterion(self):
        criterion = getattr(unwrap_model(self.trainer.model), "criterion", None)
        if criterion is None or not hasattr(criterion, "epsilon"):
            raise ValueError(
                f"MODEL.MASK_FORMER.INFLUENCER.EPSILON_SCHEDULE={self.schedule.kind!r} needs a criterion with an "
                f"epsilon (the ot criterion), got {type(criterion).__name__}: set EPSILON_SCHEDULE 'constant'")
        return criterion

    def before_train(self):
        self._criterion()

    def before_step(self):
        eps = self.schedule(self.trainer.iter)
        self._criterion().epsilon = eps
        self.trainer.storage.put_scalar("criterion/epsilon", eps, smoothing_hint=False)


class ModelScalarsHook(HookBase):
    """After every step, logs the model's ``pop_scalars()`` (criterion statistics and time),
    which the forward keeps on the device so that the step has no host synchronisation."""

    def after_step(self):
        pop = getattr(unwrap_model(self.trainer.model), "pop_scalars", None)
        if pop is not None:
            for name, value in pop().items():
                self.trainer.storage.put_scalar(name, value)
