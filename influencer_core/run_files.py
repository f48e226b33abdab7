"""The files of a training run, as the 2D and 3D tools handle them (torch and the standard
library only; no detectron2 / mmengine):

* :func:`check_checkpoint_file` / :func:`load_checkpoint_file` / :func:`reading_checkpoint`:
  a checkpoint that is empty, cut short or not a checkpoint at all raises
  :class:`CheckpointError` naming the file, instead of torch's ``EOFError``, ``invalid load
  key`` or its advice to retry with ``weights_only=False`` (unsafe, and useless for random
  bytes).  The structural check reads no objects (nothing is unpickled), so it is cheap and
  safe to run before the slow steps of a tool.
* :func:`add_cpu_threads_arg` / :func:`set_cpu_threads`: on a CPU, the tools run torch with
  one intra-op thread unless told otherwise (several OpenMP threads on a busy machine made
  training steps many times slower).
* :func:`warn_other_checkout`: the shared environment imports the checkout that last ran
  ``tools/install.sh``; a tool run from another checkout says so and names the fix.
* :func:`previous_run_files` / :func:`prepare_output_dir`: training into a folder that holds a
  previous run's checkpoints and logs is refused unless the run is resumed or explicitly
  overwritten (then the old run's files are removed first, so logs of two runs never mix).
"""
import glob
import os
import pickle
import pickletools
import shutil
import zipfile
from contextlib import contextmanager
from typing import Callable, Iterable, List, Optional

__all__ = [
    "CheckpointError",
    "OutputDirError",
    "check_checkpoint_file",
    "load_checkpoint_file",
    "reading_checkpoint",
    "previous_run_files",
    "prepare_output_dir",
    "add_cpu_threads_arg",
    "set_cpu_threads",
    "warn_other_checkout",
]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (missing, empty, truncated or not a checkpoint)."""


class OutputDirError(RuntimeError):
    """An output folder that holds a previous run, given without resume / overwrite."""


# ------------------------------------------------------------------------------- checkpoints
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since torch 1.6


def _unreadable(path: str, detail: str, source: Optional[str]) -> CheckpointError:
    where = f" ({source})" if source else ""
    other = f"set {source} to another file" if source else "use another file"
    return CheckpointError(f"could not read checkpoint {path}{where}: truncated or not a checkpoint ({detail}); "
                           f"copy or download it again, or {other}")


def _walk_pickle(stream) -> None:
    """Reads the opcodes of one pickle up to its STOP (no object is built); ValueError if the
    bytes are not a complete pickle."""
    for _ in pickletools.genops(stream):
        pass


def check_checkpoint_file(path: str, source: Optional[str] = None) -> None:
    """Cheap structural check of a checkpoint file (``torch.save`` zip archive or pickle).

    ``source`` names the setting the path came from (``MODEL.WEIGHTS``, ``--resume``, ...) for the
    message.  Returns None; raises :class:`CheckpointError` when the file is missing, empty, a zip
    archive without its central directory (cut short) or without torch's ``data.pkl``, or neither
    a zip archive nor a complete pickle.  The zip's ``data.pkl`` and a plain pickle's first
    object are walked opcode by opcode (nothing is unpickled); the tensor data is not read."""
    if not os.path.isfile(path):
        where = f" ({source})" if source else ""
        raise CheckpointError(f"checkpoint not found: {path}{where}; check the path")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise _unreadable(path, "the file is empty", source)
    try:
        if head == _ZIP_MAGIC:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    raise _unreadable(path, "a zip archive without torch's data.pkl", source)
                with zf.open(names[0]) as f:  # reading to the end also checks its CRC
                    _walk_pickle(f)
        else:
            with open(path, "rb") as f:
                _walk_pickle(f)
    except zipfile.BadZipFile as exc:
        raise _unreadable(path, f"a zip archive cut short or damaged: {exc}", source) from None
    except (ValueError, EOFError) as exc:
        if head == _ZIP_MAGIC:
            kind = "a zip archive with a damaged data.pkl"
        elif head[:1] == b"\x80":  # pickle protocol 2+ header
            kind = "a pickle that ends early or is damaged"
        else:
            kind = f"neither a zip archive nor a pickle, it starts with {head!r}"
        raise _unreadable(path, f"{kind}: {exc}", source) from None


@contextmanager
def reading_checkpoint(path: str, source: Optional[str] = None):
    """Context for the actual load of ``path`` (by torch, pickle, a framework's loader): the
    errors a damaged file gives become :class:`CheckpointError` naming it.  torch's refusal of a
    well-formed file that pickles objects other than tensors under ``weights_only=True`` passes
    through unchanged (that is a question of trust, not a damaged file)."""
    try:
        yield
    except CheckpointError:
        raise
    except EOFError:
        raise _unreadable(path, "the data ends too early", source) from None
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Unsupported global" in msg:  # a well-formed file with other objects: torch's advice fits
            raise
        # torch's weights-only message starts with the advice to unpickle fully: keep only its cause
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        cause = next((ln for ln in lines if ln.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
        raise _unreadable(path, f"unpickling failed: {cause or type(exc).__name__}", source) from None
    except RuntimeError as exc:
        msg = str(exc)
        # torch's words for a damaged file (zip reader, legacy format's storages and magic number)
        if any(word in msg for word in ("PytorchStreamReader", "zip archive", "unexpected EOF", "corrupt",
                                        "Invalid magic number")):
            raise _unreadable(path, msg.split(". ")[0], source) from None
        raise


def load_checkpoint_file(path: str, map_location="cpu", weights_only: Optional[bool] = None,
                         source: Optional[str] = None, loader: Optional[Callable] = None):
    """``torch.load(path)`` after :func:`check_checkpoint_file`, inside :func:`reading_checkpoint`.

    ``weights_only=None`` leaves torch's default (and its ``TORCH_FORCE_*`` variables) in charge;
    ``loader(path)``, when given, replaces torch.load (e.g. ``pickle.load`` for a ``.pkl``).
    Returns the loaded object; raises :class:`CheckpointError`."""
    check_checkpoint_file(path, source)
    with reading_checkpoint(path, source):
        if loader is not None:
            return loader(path)
        import torch

        kwargs = {} if weights_only is None else {"weights_only": weights_only}
        return torch.load(path, map_location=map_location, **kwargs)


# ------------------------------------------------------------------------------ output folder
def _glob(folder: str, patterns: Iterable[str]) -> List[str]:
    """Paths relative to ``folder`` matching the glob ``patterns`` (``x/y`` patterns look into sub-folders)."""
    found = set()
    for pat in patterns:
        for path in glob.glob(os.path.join(glob.escape(folder), pat)):
            found.add(os.path.relpath(path, folder))
    return sorted(found)


def previous_run_files(folder: str, markers: Iterable[str]) -> List[str]:
    """Sorted paths (relative to ``folder``) of the non-empty files matching the glob ``markers``:
    the evidence that a run already trained there.  Empty files do not count (a run that failed
    while starting leaves e.g. an empty metrics.json, which must not block the retry).  [] when the
    folder is absent."""
    if not os.path.isdir(folder):
        return []
    return [rel for rel in _glob(folder, markers)
            if os.path.isfile(os.path.join(folder, rel)) and os.path.getsize(os.path.join(folder, rel)) > 0]


def prepare_output_dir(folder: str, *, markers: Iterable[str], resume: bool, overwrite: bool,
                       also_remove: Iterable[str] = (), keep: Iterable[Optional[str]] = (),
                       setting: str = "the output folder", log: Callable[[str], None] = print,
                       resumable: bool = True) -> List[str]:
    """Guard a training run's output ``folder`` against a previous run's files.

    ``markers``: glob patterns (relative to ``folder``) of files that show a previous run
    (checkpoints, ``last_checkpoint``, metric logs; see :func:`previous_run_files`); ``also_remove``:
    patterns of further files or folders of a run that ``overwrite`` deletes with them (text logs,
    TensorBoard events, per-run log folders); ``keep``: paths never deleted (e.g. the weights the
    new run starts from).  ``setting`` names the option that chose the folder, for the message;
    ``resumable=False``: the tool has no ``--resume`` (examples), so the message does not offer it.

    Returns the paths removed (``overwrite``) or [].  Raises :class:`OutputDirError` when the folder
    holds a previous run and neither ``resume`` nor ``overwrite`` is set, or when both are."""
    if resume and overwrite:
        raise OutputDirError("--resume continues the run in the folder and --overwrite deletes it: give only one")
    markers = list(markers)
    found = previous_run_files(folder, markers)
    if not found or resume:
        return []
    if not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        if resumable:
            raise OutputDirError(
                f"{folder} ({setting}) already holds a training run ({shown}); training again would replace its "
                f"checkpoints and mix the two runs' logs. Pass --resume to continue that run, --overwrite to delete "
                f"its files and start again, or choose another folder")
        raise OutputDirError(f"{folder} ({setting}) already holds a run ({shown}); pass --overwrite to replace it "
                             f"or choose another folder")
    kept = {os.path.realpath(p) for p in keep if p}
    removed = []
    for rel in _glob(folder, markers + list(also_remove)):
        full = os.path.join(folder, rel)
        if os.path.realpath(full) in kept or not os.path.lexists(full):  # already gone with its folder
            continue
        if any(k.startswith(os.path.realpath(full) + os.sep) for k in kept):
            continue  # a folder holding a kept file stays
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)
        removed.append(rel)
    if removed:
        log(f"--overwrite: removed {len(removed)} files / folders of the previous run in {folder}: "
            + ", ".join(removed[:6]) + (" ..." if len(removed) > 6 else ""))
    return removed


# ---------------------------------------------------------------------------------- threads
def add_cpu_threads_arg(parser):
    parser.add_argument(
        "--cpu-threads", type=int, default=None,
        help="torch intra-op threads when running without CUDA (default: $OMP_NUM_THREADS if "
        "set, else 1; 0 keeps torch's default). One thread is much faster on a shared CPU.")


def set_cpu_threads(requested=None):
    """Without CUDA, set torch's intra-op threads: ``requested`` (0: leave torch's default),
    else $OMP_NUM_THREADS, else 1.  On a 2-core machine shared with other jobs, two OpenMP
    threads made the 3D synthetic config ~15x slower per iteration than one (15 s vs 1.0 s) and
    2D steps 10-40x slower; spconv's CPU kernels run single-threaded anyway.  Returns the thread
    count in use."""
    import torch  # as load_checkpoint_file: torch only when a tool actually asks

    if torch.cuda.is_available():
        return torch.get_num_threads()
    if requested is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        requested = int(env) if env.isdigit() else 1
    if requested > 0:
        torch.set_num_threads(requested)
    return torch.get_num_threads()


def warn_other_checkout(root: str, stream=None) -> bool:
    """Print a warning to ``stream`` (stderr) and return True when ``influencer_core`` is imported
    from another checkout than ``root`` (the folder holding ``tools/``): the tool would then run
    that checkout's code."""
    import sys

    from . import __file__ as core_file

    where = os.path.dirname(os.path.dirname(os.path.realpath(core_file)))
    if where == os.path.realpath(root):
        return False
    print(f"warning: influencer_core is imported from {where}, not from this checkout ({root}); this run "
          f"uses that code. To use this checkout's: bash {root}/tools/install.sh", file=stream or sys.stderr)
    return True
