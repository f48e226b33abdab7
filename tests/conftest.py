"""Fixtures shared by every test folder (tests/core, 2d, 3d, tools, generators)."""
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_tf32():
    """TF32 off for the test (it rounds CUDA matrix products to 10 mantissa bits), then restored."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def fused_msda_calls(monkeypatch):
    """Counts the fused (Triton) deformable-attention calls during the test: a list that grows
    by one per call."""
    import importlib

    msda = importlib.import_module("influencerformer2d.modeling.pixel_decoder.ms_deform_attn")
    calls = []
    fused = msda._MSDeformAttnTriton.apply
    monkeypatch.setattr(msda._MSDeformAttnTriton, "apply", lambda *a: calls.append(1) or fused(*a))
    return calls
