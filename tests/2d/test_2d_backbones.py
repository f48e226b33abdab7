"""2D backbones: Swin (ours, Mask2Former's D2SwinTransformer layout) and detectron2's ResNet-50.

Checkpoint layouts are compared with the recorded upstream key lists in
tests/data/checkpoint_keys.  The Swin behaviour
(shifted windows, masks, relative position bias, padding, patch merging order) is checked against
brute-force formulations written from the paper's definitions.
"""
import importlib
import importlib.util
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_backbone

from tests import DATA, ROOT

KEYS_DIR = os.path.join(DATA, "checkpoint_keys")
SWIN_FILE = os.path.join(ROOT, "projects", "InfluencerFormer2D", "influencerformer2d", "modeling", "backbone",
                         "swin.py")


def _load_swin():
    """The package module; the file itself when the package does not import (yet)."""
    try:
        return importlib.import_module("influencerformer2d.modeling.backbone.swin")
    except Exception:  # e.g. a sibling module of `modeling` missing or broken
        spec = importlib.util.spec_from_file_location("_influencerformer2d_swin", SWIN_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


swin = _load_swin()

SWIN_L = dict(
    PRETRAIN_IMG_SIZE=384,
    EMBED_DIM=192,
    DEPTHS=[2, 2, 18, 2],
    NUM_HEADS=[6, 12, 24, 48],
    WINDOW_SIZE=12,
)
SWIN_TINY = dict(
    PRETRAIN_IMG_SIZE=64,
    EMBED_DIM=24,
    DEPTHS=[1, 1, 2, 1],
    NUM_HEADS=[1, 2, 3, 4],
    WINDOW_SIZE=4,
    DROP_PATH_RATE=0.0,
)
ALL_FEATURES = ["res2", "res3", "res4", "res5"]


def _swin_cfg(**overrides):
    cfg = get_cfg()
    try:  # the project's config function (defines MODEL.SWIN), when it imports
        config = importlib.import_module("influencerformer2d.config")
    except Exception:
        config = None
    for name in ("add_influencerformer_config", "add_maskformer2_config"):
        if config is not None and hasattr(config, name):
            getattr(config, name)(cfg)
            break
    if not hasattr(cfg.MODEL, "SWIN"):
        cfg.MODEL.SWIN = CN()
    defaults = dict(  # Mask2Former's defaults
        PRETRAIN_IMG_SIZE=224,
        PATCH_SIZE=4,
        EMBED_DIM=96,
        DEPTHS=[2, 2, 6, 2],
        NUM_HEADS=[3, 6, 12, 24],
        WINDOW_SIZE=7,
        MLP_RATIO=4.0,
        QKV_BIAS=True,
        QK_SCALE=None,
        DROP_RATE=0.0,
        ATTN_DROP_RATE=0.0,
        DROP_PATH_RATE=0.3,
        APE=False,
        PATCH_NORM=True,
        OUT_FEATURES=list(ALL_FEATURES),
        USE_CHECKPOINT=False,
    )
    for key, value in defaults.items():
        if key not in cfg.MODEL.SWIN:
            setattr(cfg.MODEL.SWIN, key, value)
    for key, value in overrides.items():
        setattr(cfg.MODEL.SWIN, key, value)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    return cfg


def _recorded_backbone_keys(name):
    path = os.path.join(KEYS_DIR, name)
    if not os.path.exists(path):
        pytest.skip(f"no recorded checkpoint keys at {path}")
    with open(path) as f:
        keys = json.load(f)
    prefix = "backbone."
    return {k[len(prefix):]: list(v) for k, v in keys.items() if k.startswith(prefix)}


def _assert_same_layout(module, recorded):
    ours = {k: list(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(recorded) - set(ours))
    unexpected = sorted(set(ours) - set(recorded))
    assert not missing and not unexpected, (missing[:10], unexpected[:10])
    wrong = {k: (ours[k], recorded[k]) for k in recorded if ours[k] != recorded[k]}
    assert not wrong, list(wrong.items())[:10]


# ---------------------------------------------------------------------------------------------
# checkpoint layouts


@pytest.fixture(scope="module")
def swin_large():
    model = build_backbone(_swin_cfg(**SWIN_L))  # via the registry, by Mask2Former's name
    assert isinstance(model, swin.D2SwinTransformer) or type(model).__name__ == "D2SwinTransformer"
    return model


def test_swin_large_matches_mask2former_checkpoint_layout(swin_large):
    recorded = _recorded_backbone_keys("m2f_swinL_panoptic_keys.json")
    _assert_same_layout(swin_large, recorded)
    buffers = dict(swin_large.named_buffers())
    assert len(buffers) == 24 and all(k.endswith("relative_position_index") for k in buffers)

    # strict load of "checkpoint" tensors with the recorded shapes
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in recorded.items():
        if key.endswith("relative_position_index"):
            state[key] = swin.relative_position_index(12).clone()
        else:
            state[key] = torch.randn(shape, generator=gen)
    result = swin_large.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    probe = "layers.2.blocks.17.attn.relative_position_bias_table"
    assert torch.equal(swin_large.state_dict()[probe], state[probe])

    shapes = swin_large.output_shape()
    assert list(shapes) == ALL_FEATURES
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == [192, 384, 768, 1536]
    assert swin_large.size_divisibility == 32
    assert isinstance(swin_large, Backbone)


def test_resnet50_matches_mask2former_checkpoint_layout():
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    recorded = _recorded_backbone_keys("m2f_r50_panoptic_keys.json")
    cfg = get_cfg()
    # Mask2Former's R-50 settings (STEM_TYPE / RES5_MULTI_GRID are Mask2Former keys that
    # detectron2's build_resnet_backbone does not read; they are set here as its configs do)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 1, 1]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(ALL_FEATURES)
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    _assert_same_layout(model, recorded)
    shapes = model.output_shape()
    assert [shapes[f].stride for f in ALL_FEATURES] == [4, 8, 16, 32]
    assert [shapes[f].channels for f in ALL_FEATURES] == [256, 512, 1024, 2048]


# ---------------------------------------------------------------------------------------------
# brute-force references


def _naive_block(block, x, h, w):
    """Swin block by its definition, as full attention over the padded map.

    Token pairs in different (shifted) windows are excluded; within a shifted window, pairs from
    different regions of the un-shifted map get -100; the bias is looked up from the offsets of
    the two tokens inside their window.  No partitioning, rolling or precomputed masks involved.
    """
    ws, s = block.window_size, block.shift_size
    attn = block.attn
    b, _, c = x.shape
    nh, d = attn.num_heads, c // attn.num_heads
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws

    y = F.pad(block.norm1(x).view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    y = y.reshape(b, hp * wp, c)  # padded tokens: zeros after norm1, not masked (upstream)
    rows = torch.arange(hp).repeat_interleave(wp)
    cols = torch.arange(wp).repeat(hp)
    pr, pc = (rows - s) % hp, (cols - s) % wp  # position after the cyclic shift by -s
    window = (pr // ws) * (wp // ws) + pc // ws
    same_window = window[:, None] == window[None, :]
    # tokens of the first s rows / columns come around from the other edge of the map: within a
    # shifted window they must not mix with tokens that did not
    wrapped_r, wrapped_c = rows < s, cols < s
    other_region = (wrapped_r[:, None] != wrapped_r[None, :]) | (
        wrapped_c[:, None] != wrapped_c[None, :]
    )
    penalty = torch.where(other_region, -100.0, 0.0) if s > 0 else torch.zeros(hp * wp, hp * wp)
    ir, ic = pr % ws, pc % ws  # position inside the window
    d_r = ir[:, None] - ir[None, :] + ws - 1
    d_c = ic[:, None] - ic[None, :] + ws - 1
    bias = attn.relative_position_bias_table[d_r * (2 * ws - 1) + d_c].permute(2, 0, 1)

    q, k, v = attn.qkv(y).view(b, hp * wp, 3, nh, d).permute(2, 0, 3, 1, 4)
    logits = (q * attn.scale) @ k.transpose(-1, -2) + bias + penalty
    logits = logits.masked_fill(~same_window, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, hp, wp, c)[:, :h, :w]
    x = x + attn.proj(out.reshape(b, h * w, c))
    return x + block.mlp(block.norm2(x))


def test_relative_position_index_brute_force():
    for wh, ww in [(4, 4), (3, 5), (12, 12)]:
        index = swin.relative_position_index((wh, ww))
        assert index.dtype == torch.int64 and index.shape == (wh * ww, wh * ww)
        expected = torch.empty_like(index)
        for i in range(wh * ww):
            for j in range(wh * ww):
                dh = i // ww - j // ww
                dw = i % ww - j % ww
                expected[i, j] = (dh + wh - 1) * (2 * ww - 1) + (dw + ww - 1)
        assert torch.equal(index, expected)
        # every table row is used, offset (0, 0) sits on the diagonal
        assert index.unique().numel() == (2 * wh - 1) * (2 * ww - 1)
        assert (index.diagonal() == (wh - 1) * (2 * ww - 1) + ww - 1).all()


def test_shifted_window_mask_brute_force():
    ws, s = 4, 2
    for hp, wp in [(16, 20), (8, 12), (4, 4)]:
        mask = swin.shifted_window_attention_mask(hp, wp, ws, s)
        n_windows = (hp // ws) * (wp // ws)
        assert mask.shape == (n_windows, ws * ws, ws * ws)
        assert set(mask.unique().tolist()) <= {0.0, -100.0}
        # window k of the shifted grid holds original rows (r + s) % hp: pair allowed iff both
        # tokens are on the same side of the wrap-around in each axis
        for k in range(n_windows):
            wr, wc = divmod(k, wp // ws)
            for i in range(ws * ws):
                for j in range(ws * ws):
                    ri, ci = wr * ws + i // ws, wc * ws + i % ws
                    rj, cj = wr * ws + j // ws, wc * ws + j % ws
                    allowed = (ri + s >= hp) == (rj + s >= hp) and (ci + s >= wp) == (cj + s >= wp)
                    assert mask[k, i, j].item() == (0.0 if allowed else -100.0), (hp, wp, k, i, j)
        # only the last window row / column are masked at all
        masked = (mask != 0).flatten(1).any(1).view(hp // ws, wp // ws)
        expected = torch.zeros_like(masked)
        expected[-1, :] = True
        expected[:, -1] = True
        assert torch.equal(masked, expected)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (10, 7), (3, 5)])
def test_block_matches_brute_force_definition(shift, hw):
    h, w = hw
    block = swin.SwinTransformerBlock(dim=12, num_heads=3, window_size=4, shift_size=shift).eval()
    with torch.no_grad():  # a bias table far from zero makes bias orientation errors visible
        block.attn.relative_position_bias_table.normal_(0, 1.0)
    x = torch.randn(2, h * w, 12)
    with torch.no_grad():
        ours = block(x, h, w)
        reference = _naive_block(block, x, h, w)
    assert ours.shape == (2, h * w, 12)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_shifted_windows_connect_neighbouring_windows():
    """A regular block keeps information inside its 4x4 windows; the shifted block moves it across
    window borders, but not between the two ends of the map it wraps around."""
    h, w, c = 8, 8, 8
    plain = swin.SwinTransformerBlock(dim=c, num_heads=2, window_size=4, shift_size=0).eval()
    shifted = swin.SwinTransformerBlock(dim=c, num_heads=2, window_size=4, shift_size=2).eval()
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(1, h, w, c)
    x2 = x.clone()
    x2[0, 0, 3] += 3.0 * torch.randn(c)  # a token at the right edge of window (0, 0)
    changed = {}
    with torch.no_grad():
        for name, blk in (("plain", plain), ("shifted", shifted)):
            delta = blk(x2.view(1, -1, c), h, w) - blk(x.view(1, -1, c), h, w)
            changed[name] = delta.view(h, w, c).abs().amax(-1) > 1e-6
    # the plain block only touches window (0, 0) = rows 0-3, cols 0-3
    expected_plain = torch.zeros(h, w, dtype=torch.bool)
    expected_plain[:4, :4] = True
    assert torch.equal(changed["plain"], expected_plain)
    # the shifted block reaches (0, 4) across the border (shifted window rows 0-1 / cols 2-5)...
    assert changed["shifted"][0, 4] and changed["shifted"][1, 2]
    assert not changed["shifted"][0, 0]  # ...not (0, 0), which is in a different shifted window
    # ...and row 0 never reaches rows 6-7 although they share a (wrapped) shifted window
    assert not changed["shifted"][6:].any()
    assert not torch.equal(changed["plain"], changed["shifted"])


def test_patch_merging_order_and_padding():
    merge = swin.PatchMerging(dim=3)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.randn(6, 12))
    h, w = 5, 3
    x = torch.randn(2, h, w, 3)
    out = merge(x.reshape(2, h * w, 3), h, w)
    assert out.shape == (2, 3 * 2, 6)
    padded = F.pad(x, (0, 0, 0, 1, 0, 1))  # 6 x 4
    cells = []
    for i in range(3):
        for j in range(2):
            r, c = 2 * i, 2 * j
            quad = [padded[:, r, c], padded[:, r + 1, c], padded[:, r, c + 1]]
            cells.append(torch.cat(quad + [padded[:, r + 1, c + 1]], -1))
    expected = merge.reduction(merge.norm(torch.stack(cells, 1)))
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------------------------------------
# tiny model end to end


def test_tiny_swin_forward_shapes_and_gradients():
    cfg = _swin_cfg(**SWIN_TINY)
    model = build_backbone(cfg)
    model.train()
    x = torch.randn(2, 3, 64, 80)  # stride-4 map 16x20; 8x10, 4x5, 2x3 need window padding
    outs = model(x)
    assert list(outs) == ALL_FEATURES
    shapes = model.output_shape()
    for name, out in outs.items():
        stride, channels = shapes[name].stride, shapes[name].channels
        assert out.shape == (2, channels, math.ceil(64 / stride), math.ceil(80 / stride)), name
        assert torch.isfinite(out).all()
    assert [shapes[f].channels for f in ALL_FEATURES] == [24, 48, 96, 192]
    assert [tuple(o.shape[-2:]) for o in outs.values()] == [(16, 20), (8, 10), (4, 5), (2, 3)]

    # random projections: a plain sum would be blind behind the output LayerNorms
    loss = sum((o * torch.randn_like(o)).sum() for o in outs.values())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, no_grad

    # gradient checkpointing (USE_CHECKPOINT): same outputs and gradients
    ckpt = build_backbone(_swin_cfg(**SWIN_TINY, USE_CHECKPOINT=True)).train()
    ckpt.load_state_dict(model.state_dict())
    outs_ckpt = ckpt(x)
    weights = {k: torch.randn_like(v) for k, v in outs.items()}
    model.zero_grad()
    sum((outs_ckpt[k] * weights[k]).sum() for k in ALL_FEATURES).backward()
    sum((model(x)[k] * weights[k]).sum() for k in ALL_FEATURES).backward()
    reference = dict(model.named_parameters())
    for name in ALL_FEATURES:
        torch.testing.assert_close(outs_ckpt[name], outs[name])
    for n, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, reference[n].grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiny_swin_under_autocast(dtype):
    """Mixed precision (AMP) keeps the shifted-window attention and its -100 mask finite and
    close to float32 (CPU autocast here)."""
    model = build_backbone(_swin_cfg(**SWIN_TINY)).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x)
    for name in ALL_FEATURES:
        assert torch.isfinite(low[name]).all(), name
        err = (low[name].float() - full[name]).norm() / full[name].norm()
        assert err < 0.05, (name, float(err))


def test_tiny_swin_out_features_ape_and_drop_path():
    # subset of outputs, absolute position embedding (interpolated to a non-square map)
    cfg = _swin_cfg(**{**SWIN_TINY, "APE": True, "OUT_FEATURES": ["res3", "res5"]})
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.2
    model = build_backbone(cfg)
    state = model.state_dict()
    assert state["absolute_pos_embed"].shape == (1, 24, 16, 16)
    assert "norm0.weight" in state and "norm3.weight" in state  # checkpoint layout kept
    assert list(model.output_shape()) == ["res3", "res5"]
    x = torch.randn(2, 3, 64, 80)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert list(a) == ["res3", "res5"]
    assert a["res3"].shape == (2, 48, 8, 10) and a["res5"].shape == (2, 192, 2, 3)
    torch.testing.assert_close(a["res5"], b["res5"])  # stochastic depth off in eval

    # stochastic depth rates rise linearly over all blocks (0 ... DROP_PATH_RATE)
    rates = [
        getattr(blk.drop_path, "drop_prob", 0.0) for layer in model.layers for blk in layer.blocks
    ]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 5))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        c = model(x)
    assert not torch.allclose(c["res5"], a["res5"])

    # sizes that are not multiples of the patch size are zero-padded by the patch embedding
    model.eval()
    with torch.no_grad():
        odd = model(x[:, :, :63, :79])
        padded = model(F.pad(x[:, :, :63, :79], (0, 1, 0, 1)))
    torch.testing.assert_close(odd["res3"], padded["res3"])


def test_registration_is_idempotent():
    assert "D2SwinTransformer" in BACKBONE_REGISTRY
    registered = BACKBONE_REGISTRY.get("D2SwinTransformer")
    # loading the file once more (another module name) must not fail on the duplicate name
    spec = importlib.util.spec_from_file_location("_influencerformer2d_swin_again", SWIN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert BACKBONE_REGISTRY.get("D2SwinTransformer") is registered
