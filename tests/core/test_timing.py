"""influencer_core.timing.DeviceTimer: the criterion timer of the 2D model and the 3D detectors."""
import time

import pytest
import torch

from influencer_core.timing import DeviceTimer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cpu_timer_measures_the_span():
    timer = DeviceTimer("cpu")
    time.sleep(0.02)
    assert timer.stop() is timer
    seconds = float(timer)
    assert 0.015 < seconds < 5 and timer.item() == seconds and timer.numel() == 1
    time.sleep(0.01)
    assert float(timer) == seconds  # fixed at stop()


def test_timer_misuse_is_an_error():
    timer = DeviceTimer(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="before stop"):
        float(timer)
    timer.stop()
    with pytest.raises(RuntimeError, match="twice"):
        timer.stop()


@cuda
def test_cuda_timer_does_not_sync_until_read():
    x = torch.randn(512, 512, device="cuda")
    x @ x
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        timer = DeviceTimer(x.device)
        for _ in range(4):
            x = x @ x / 512
        timer.stop()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0 < float(timer) < 5
