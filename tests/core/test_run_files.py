"""influencer_core.run_files: a damaged checkpoint is a CheckpointError naming the file (never
torch's weights_only advice, a bare EOFError or 'invalid load key'), readable checkpoints load
as before; an output folder holding a previous run is refused unless resumed or overwritten."""
import os
import pickle

import numpy as np
import pytest
import torch

from influencer_core.run_files import (
    CheckpointError,
    OutputDirError,
    check_checkpoint_file,
    load_checkpoint_file,
    prepare_output_dir,
    previous_run_files,
)


@pytest.fixture
def good(tmp_path):
    path = str(tmp_path / "good.pth")
    torch.save({"model": {"w": torch.arange(6.0).reshape(2, 3)}, "iteration": 3}, path)
    return path


def _damaged(tmp_path, good, kind):
    path = str(tmp_path / f"{kind}.{'pkl' if kind == 'garbage_pkl' else 'pth'}")
    data = open(good, "rb").read()
    content = {"empty": b"", "random": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
               "garbage_pkl": b"this is not a pickle\n" * 10, "truncated": data[: len(data) // 2],
               "truncated_pkl": pickle.dumps({"model": {"w": np.zeros(1000)}})[:3000]}[kind]
    with open(path, "wb") as f:
        f.write(content)
    return path


DETAIL = {"empty": "the file is empty", "random": "neither a zip archive nor a pickle",
          "garbage_pkl": "neither a zip archive nor a pickle", "truncated": "a zip archive cut short or damaged",
          "truncated_pkl": "a pickle that ends early or is damaged"}


@pytest.mark.parametrize("kind", sorted(DETAIL))
def test_damaged_checkpoint_is_named_with_the_fix(tmp_path, good, kind):
    path = _damaged(tmp_path, good, kind)
    for call in (lambda: check_checkpoint_file(path, "MODEL.WEIGHTS"),
                 lambda: load_checkpoint_file(path, source="MODEL.WEIGHTS")):
        with pytest.raises(CheckpointError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"could not read checkpoint {path} (MODEL.WEIGHTS): truncated or not a checkpoint (")
        assert DETAIL[kind] in msg and "set MODEL.WEIGHTS to another file" in msg, msg
        assert "weights_only" not in msg


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope.pth \(--resume\); check the path"):
        check_checkpoint_file(str(tmp_path / "nope.pth"), "--resume")


def test_readable_checkpoints_load_unchanged(tmp_path, good):
    ckpt = load_checkpoint_file(good)
    assert ckpt["iteration"] == 3 and torch.equal(ckpt["model"]["w"], torch.arange(6.0).reshape(2, 3))
    legacy = str(tmp_path / "legacy.pth")   # torch's pre-1.6 format: pickles, then raw storages
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint_file(legacy)["w"], torch.ones(3))
    pkl = str(tmp_path / "zoo.pkl")          # detectron2 model-zoo layout, protocol 2 and 0
    for protocol in (2, 0):
        with open(pkl, "wb") as f:
            pickle.dump({"model": {"w": np.arange(3.0)}, "__author__": "x"}, f, protocol=protocol)
        out = load_checkpoint_file(pkl, loader=lambda p: pickle.load(open(p, "rb"), encoding="latin1"))
        np.testing.assert_array_equal(out["model"]["w"], np.arange(3.0))


def test_weights_only_refusal_of_a_good_file_passes_through(tmp_path):
    """A well-formed file that pickles numpy arrays is a question of trust, not damage: torch's own
    error (with its allowlist advice) is kept, and full unpickling still works when asked for."""
    path = str(tmp_path / "numpy.pth")
    torch.save({"w": np.zeros(3)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        load_checkpoint_file(path, weights_only=True)
    np.testing.assert_array_equal(load_checkpoint_file(path, weights_only=False)["w"], np.zeros(3))


def _touch(folder, rel, text="x"):
    path = os.path.join(folder, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


MARKERS = ("last_checkpoint", "*.pth", "[0-9]" * 8 + "_" + "[0-9]" * 6 + "/vis_data/scalars.json")
LOGS = ("[0-9]" * 8 + "_" + "[0-9]" * 6, "log.txt")


def test_output_dir_with_a_previous_run_is_refused(tmp_path):
    folder = str(tmp_path / "run")
    assert prepare_output_dir(folder, markers=MARKERS, resume=False, overwrite=False) == []   # absent: fine
    _touch(folder, "notes.txt")
    _touch(folder, "metrics.json", "")   # empty files: left by a run that failed while starting
    _touch(folder, "20260101_000000/20260101_000000.log")
    _touch(folder, "iter_0.pth", "")
    assert previous_run_files(folder, MARKERS + ("metrics.json",)) == []
    assert prepare_output_dir(folder, markers=MARKERS, resume=False, overwrite=False) == []
    _touch(folder, "iter_2.pth")
    _touch(folder, "20260101_000000/vis_data/scalars.json", '{"loss": 1}\n')
    with pytest.raises(OutputDirError) as info:
        prepare_output_dir(folder, markers=MARKERS, resume=False, overwrite=False, setting="--work-dir")
    msg = str(info.value)
    assert msg.startswith(f"{folder} (--work-dir) already holds a training run (20260101_000000/vis_data/"
                          "scalars.json, iter_2.pth)")
    assert "--resume to continue" in msg and "--overwrite to delete" in msg
    with pytest.raises(OutputDirError) as info:  # a tool without --resume does not offer it
        prepare_output_dir(folder, markers=MARKERS, resume=False, overwrite=False, setting="--output",
                           resumable=False)
    assert "already holds a run (" in str(info.value) and "--resume" not in str(info.value)
    assert prepare_output_dir(folder, markers=MARKERS, resume=True, overwrite=False) == []   # resume: kept
    with pytest.raises(OutputDirError, match="give only one"):
        prepare_output_dir(folder, markers=MARKERS, resume=True, overwrite=True)
    assert os.path.isfile(os.path.join(folder, "iter_2.pth"))


def test_overwrite_removes_the_run_files_only(tmp_path):
    folder = str(tmp_path / "run")
    for rel in ("iter_2.pth", "last_checkpoint", "log.txt", "notes.txt", "start.pth", "eval/test_metrics.json",
                "20260101_000000/vis_data/scalars.json", "20260101_000000/20260101_000000.log"):
        _touch(folder, rel)
    logged = []
    removed = prepare_output_dir(folder, markers=MARKERS, also_remove=LOGS, resume=False, overwrite=True,
                                 keep=[os.path.join(folder, "start.pth"), None], log=logged.append)
    assert removed == ["20260101_000000", "iter_2.pth", "last_checkpoint", "log.txt"]
    assert sorted(os.listdir(folder)) == ["eval", "notes.txt", "start.pth"]
    assert logged and logged[0].startswith(f"--overwrite: removed 4 files / folders of the previous run in {folder}")


def test_damage_only_the_real_load_finds_is_named_too(tmp_path):
    """torch's pre-1.6 format: the structural check sees only its first pickle; tensor data cut
    short is found by the load, and reported the same way."""
    path = str(tmp_path / "legacy.pth")
    torch.save({"w": torch.zeros(100)}, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    check_checkpoint_file(path)
    with pytest.raises(CheckpointError, match=r"legacy.pth \(--resume\): truncated or not a checkpoint \(unexpected"):
        load_checkpoint_file(path, source="--resume")


def test_warn_other_checkout_names_the_checkout_and_the_fix(tmp_path, capsys):
    """Tools run from a checkout whose influencer_core is not the one imported say so."""
    import io

    import influencer_core
    from influencer_core.run_files import warn_other_checkout

    here = os.path.dirname(os.path.dirname(os.path.realpath(influencer_core.__file__)))
    assert warn_other_checkout(here) is False
    assert capsys.readouterr().err == ""
    out = io.StringIO()
    assert warn_other_checkout(str(tmp_path), stream=out) is True
    msg = out.getvalue()
    assert here in msg and f"bash {tmp_path}/tools/install.sh" in msg
