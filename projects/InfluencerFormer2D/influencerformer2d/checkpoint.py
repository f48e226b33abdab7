"""detectron2's DetectionCheckpointer with a clear error for a checkpoint that cannot be read.

A damaged ``MODEL.WEIGHTS`` (or last checkpoint of ``--resume``) otherwise ends in torch's advice
to retry with ``weights_only=False`` (unsafe, and useless for random bytes), a bare ``EOFError``
or pickle's ``invalid load key``; :class:`CheckedCheckpointer` raises
:class:`influencer_core.run_files.CheckpointError` naming the file and the setting instead, and
warns when ``--resume`` finds nothing to resume.  Loading a readable checkpoint is unchanged.
"""
import logging
import os

from detectron2.checkpoint import DetectionCheckpointer

from influencer_core.run_files import CheckpointError, check_checkpoint_file, reading_checkpoint

__all__ = ["CheckedCheckpointer", "use_checked_checkpointer"]


class CheckedCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose file reading raises CheckpointError for a damaged file.

    ``source`` names the setting a path given to :meth:`load` comes from (for the message);
    :meth:`resume_or_load` names ``MODEL.WEIGHTS`` or the resumed ``last_checkpoint`` itself."""

    def __init__(self, model, save_dir="", *, source="MODEL.WEIGHTS", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.source = source

    def resume_or_load(self, path, *, resume=True):
        """As detectron2's; warns when ``resume`` finds no checkpoint (then ``path`` is loaded),
        and a ``last_checkpoint`` naming a missing file is a CheckpointError."""
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            marker = os.path.join(self.save_dir, "last_checkpoint")
            if not last or not os.path.isfile(last):
                raise CheckpointError(f"--resume: {marker} names {last or 'nothing'}, which does not exist; "
                                      "restore that file, or pass --overwrite instead of --resume to start again")
            source = f"--resume, from {marker}"
        else:
            if resume:  # detectron2 would silently start from MODEL.WEIGHTS
                start = f"MODEL.WEIGHTS={path}" if path else "scratch (MODEL.WEIGHTS is empty)"
                logging.getLogger("influencerformer2d").warning(
                    f"--resume: no checkpoint in {self.save_dir or '.'} to resume from (no last_checkpoint file); "
                    f"starting from {start}")
            source = "MODEL.WEIGHTS"
        old, self.source = self.source, source
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self.source = old

    def _load_file(self, filename):
        """The structural check first (a clear error before any unpickling), then detectron2's
        reading (.pkl model-zoo files, .pth) with its failures named."""
        check_checkpoint_file(filename, self.source)
        with reading_checkpoint(filename, self.source):
            return super()._load_file(filename)


def use_checked_checkpointer(trainer):
    """Replace a DefaultTrainer's ``checkpointer`` (and the periodic-checkpoint hook's) by a
    :class:`CheckedCheckpointer` with the same model, folder and checkpointables; returns it."""
    old = trainer.checkpointer
    new = CheckedCheckpointer(old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables)
    trainer.checkpointer = new
    for hook in getattr(trainer, "_hooks", []):
        if getattr(hook, "checkpointer", None) is old:
            hook.checkpointer = new
    return new
