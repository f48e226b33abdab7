"""Training hooks of InfluencerFormer2D."""
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from influencer_core.schedules import EpsilonSchedule

__all__ = ["EpsilonAnnealingHook", "epsilon_schedule_from_cfg"]


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
        model = self.trainer.model
        if isinstance(model, DistributedDataParallel):
            model = model.module
        criterion = getattr(model, "criterion", None)
        if criterion is None or not hasattr(criterion, "epsilon"):
            raise ValueError(
                f"MODEL.MASK_FORMER.INFLUENCER.EPSILON_SCHEDULE={self.schedule.kind!r} needs a criterion with an "
                f"epsilon (influencer_ot), got {type(criterion).__name__}: set EPSILON_SCHEDULE 'constant'")
        return criterion

    def before_train(self):
        self._criterion()

    def before_step(self):
        eps = self.schedule(self.trainer.iter)
        self._criterion().epsilon = eps
        self.trainer.storage.put_scalar("criterion/epsilon", eps, smoothing_hint=False)
