"""Mask2Former head of InfluencerFormer2D: checkpoint layout, forward/backward, deformable attention."""
import json
import math
import os
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

import influencerformer2d.modeling  # noqa: F401  (registration)
from influencerformer2d.config import CRITERION_NAMES, add_influencerformer_config
from influencerformer2d.modeling.pixel_decoder.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_pytorch,
    triton_available,
)
from influencerformer2d.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    PositionEmbeddingSine,
)

# tests/data/checkpoint_keys (by path: the file also runs outside pytest, see _PIXEL_DECODER_SCRIPT)
KEYS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "checkpoint_keys")
FEATURES = ("res2", "res3", "res4", "res5")
STRIDES = (4, 8, 16, 32)
R50_CHANNELS = (256, 512, 1024, 2048)
SWIN_L_CHANNELS = (192, 384, 768, 1536)


def _cfg(num_classes=133, num_queries=100):
    """Mask2Former's COCO R50 head settings (maskformer2_R50_bs16_50ep.yaml)."""
    cfg = get_cfg()
    add_influencerformer_config(cfg)
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "MaskFormer",
        "MODEL.SEM_SEG_HEAD.NAME", "MaskFormerHead",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", list(FEATURES),
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 1.0,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256,
        "MODEL.SEM_SEG_HEAD.MASK_DIM", 256,
        "MODEL.SEM_SEG_HEAD.NORM", "GN",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "MSDeformAttnPixelDecoder",
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4,
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 6,
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "MultiScaleMaskedTransformerDecoder",
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder",
        "MODEL.MASK_FORMER.DEEP_SUPERVISION", True,
        "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", 0.1,
        "MODEL.MASK_FORMER.CLASS_WEIGHT", 2.0,
        "MODEL.MASK_FORMER.MASK_WEIGHT", 5.0,
        "MODEL.MASK_FORMER.DICE_WEIGHT", 5.0,
        "MODEL.MASK_FORMER.HIDDEN_DIM", 256,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", num_queries,
        "MODEL.MASK_FORMER.NHEADS", 8,
        "MODEL.MASK_FORMER.DROPOUT", 0.0,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 2048,
        "MODEL.MASK_FORMER.ENC_LAYERS", 0,
        "MODEL.MASK_FORMER.PRE_NORM", False,
        "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", False,
        "MODEL.MASK_FORMER.SIZE_DIVISIBILITY", 32,
        "MODEL.MASK_FORMER.DEC_LAYERS", 10,
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 12544,
        "MODEL.MASK_FORMER.OVERSAMPLE_RATIO", 3.0,
        "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", 0.75,
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True,
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", True,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True,
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", 0.8,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.8,
        "INPUT.IMAGE_SIZE", 1024,
        "INPUT.MIN_SCALE", 0.1,
        "INPUT.MAX_SCALE", 2.0,
        "INPUT.DATASET_MAPPER_NAME", "coco_panoptic_lsj",
        "SOLVER.OPTIMIZER", "ADAMW",
        "SOLVER.BACKBONE_MULTIPLIER", 0.1,
    ])
    return cfg


def _input_shape(channels):
    return {name: ShapeSpec(channels=c, stride=s) for name, c, s in zip(FEATURES, channels, STRIDES)}


def _reference_keys(filename):
    path = os.path.join(KEYS_DIR, filename)
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    with open(path) as f:
        keys = json.load(f)
    return {k: tuple(v) for k, v in keys.items() if k.startswith("sem_seg_head.")}


def _head_keys(head):
    return {"sem_seg_head." + k: tuple(v.shape) for k, v in head.state_dict().items()}


CASES = {
    "r50_panoptic": ("m2f_r50_panoptic_keys.json", 133, 100, R50_CHANNELS),
    "r50_instance": ("m2f_r50_instance_keys.json", 80, 100, R50_CHANNELS),
    "swinL_panoptic": ("m2f_swinL_panoptic_keys.json", 133, 200, SWIN_L_CHANNELS),
}


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
@pytest.mark.full_stack
def test_config_defaults():
    cfg = get_cfg()
    add_influencerformer_config(cfg)
    mf = cfg.MODEL.MASK_FORMER
    # a few of Mask2Former's defaults
    assert mf.DEC_LAYERS == 6 and mf.MASK_WEIGHT == 20.0 and mf.DROPOUT == 0.1
    assert mf.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    assert mf.TRAIN_NUM_POINTS == 112 * 112
    assert cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES == ["res3", "res4", "res5"]
    assert cfg.MODEL.SWIN.QK_SCALE is None and cfg.MODEL.SWIN.DEPTHS == [2, 2, 6, 2]
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0 and cfg.INPUT.SIZE_DIVISIBILITY == -1
    # ours
    assert mf.CRITERION == "ot"
    inf = mf.INFLUENCER
    assert (inf.ATTR_WEIGHT, inf.REP_WEIGHT, inf.BG_WEIGHT, inf.REP_MARGIN, inf.TEMPERATURE, inf.WEIGHT) == (
        1.0, 1.0, 1.0, 1.0, 1.0, 5.0)
    assert (inf.EPSILON, inf.SINKHORN_ITERS, inf.EXCLUSION_WEIGHT) == (0.5, 50, 0.5)
    assert (inf.EPSILON_SCHEDULE, inf.EPSILON_END, inf.EPSILON_WARMUP) == ("exp", 0.01, 0)
    assert (inf.CLASS_TARGET, inf.AUX_CAPACITY) == ("query", 1.0)
    import influencer_core

    assert set(CRITERION_NAMES) == set(influencer_core.CRITERIA)
    # the R50 / Swin-L yaml values merge (every key exists)
    _cfg()
    assert "MultiScaleMaskedTransformerDecoder" in TRANSFORMER_DECODER_REGISTRY
    assert "MaskFormerHead" in SEM_SEG_HEADS_REGISTRY and "MSDeformAttnPixelDecoder" in SEM_SEG_HEADS_REGISTRY


# ------------------------------------------------------------------------------------------
# checkpoint layout
# ------------------------------------------------------------------------------------------
@pytest.mark.full_stack
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_matches_upstream(case):
    filename, num_classes, num_queries, channels = CASES[case]
    ref = _reference_keys(filename)
    head = build_sem_seg_head(_cfg(num_classes, num_queries), _input_shape(channels))
    ours = _head_keys(head)
    assert sorted(set(ref) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(ref)) == []  # unexpected
    assert {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]} == {}
    assert list(ours) == list(ref)  # same registration order as upstream


@pytest.mark.full_stack
def test_load_recorded_state_dict_strict():
    filename, num_classes, num_queries, channels = CASES["r50_panoptic"]
    ref = _reference_keys(filename)
    head = build_sem_seg_head(_cfg(num_classes, num_queries), _input_shape(channels))
    gen = torch.Generator().manual_seed(1)
    state = {k[len("sem_seg_head."):]: torch.randn(shape, generator=gen) for k, shape in ref.items()}
    result = head.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in head.state_dict().items():
        assert torch.equal(v, state[k]), k


# ------------------------------------------------------------------------------------------
# forward / backward
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r50_head():
    torch.manual_seed(0)
    return build_sem_seg_head(_cfg(), _input_shape(R50_CHANNELS))


def _features(batch=2, image=64, channels=R50_CHANNELS):
    return {name: torch.randn(batch, c, image // s, image // s) for name, c, s in zip(FEATURES, channels, STRIDES)}


@pytest.mark.full_stack
def test_forward_shapes_and_backward(r50_head):
    head = r50_head.train()
    head.zero_grad(set_to_none=True)
    feats = _features()
    out = head(feats)
    assert out["pred_logits"].shape == (2, 100, 134)
    assert out["pred_masks"].shape == (2, 100, 16, 16)
    assert len(out["aux_outputs"]) == 9
    for aux in out["aux_outputs"]:
        assert set(aux) == {"pred_logits", "pred_masks"}
        assert aux["pred_logits"].shape == (2, 100, 134) and aux["pred_masks"].shape == (2, 100, 16, 16)
    preds = [out] + out["aux_outputs"]
    assert all(torch.isfinite(p[k]).all() for p in preds for k in ("pred_logits", "pred_masks"))

    # pixel decoder outputs
    mask_features, encoder_features, multi_scale = head.pixel_decoder.forward_features(feats)
    assert mask_features.shape == (2, 256, 16, 16)
    assert encoder_features.shape == (2, 256, 2, 2)
    assert [tuple(f.shape) for f in multi_scale] == [(2, 256, 2, 2), (2, 256, 4, 4), (2, 256, 8, 8)]

    def backward(outputs):
        head.zero_grad(set_to_none=True)
        gen = torch.Generator().manual_seed(2)
        preds = [outputs] + outputs["aux_outputs"]
        loss = sum((p[k] * torch.randn(p[k].shape, generator=gen)).sum()
                   for p in preds for k in ("pred_logits", "pred_masks"))
        loss.backward()
        assert [n for n, p in head.named_parameters() if p.grad is None] == []
        assert all(torch.isfinite(p.grad).all() for p in head.parameters())
        return [n for n, p in head.named_parameters() if not p.grad.abs().sum() > 0]

    # At initialisation the encoder's level embedding only feeds the queries of deformable
    # attention, whose offset/weight projections start at zero (Deformable DETR's init), so its
    # gradient is exactly zero; every other parameter gets a non-zero gradient.
    assert backward(out) == ["pixel_decoder.transformer.level_embed"]
    attn = head.pixel_decoder.transformer.encoder.layers[0].self_attn
    saved = attn.attention_weights.weight.detach().clone()
    with torch.no_grad():
        attn.attention_weights.weight.normal_(std=0.01)
    try:
        assert backward(head(feats)) == []
    finally:
        with torch.no_grad():
            attn.attention_weights.weight.copy_(saved)


@pytest.mark.full_stack
def test_attention_mask_semantics(r50_head):
    """The decoder's masks: blocked where sigmoid(mask) < 0.5 at the next scale, per head."""
    predictor = r50_head.predictor
    q, b, c = predictor.num_queries, 2, 256
    output = torch.randn(q, b, c)
    mask_features = torch.randn(b, 256, 16, 16)
    with torch.no_grad():
        logits, masks, attn = predictor.forward_prediction_heads(output, mask_features, (4, 4))
    assert logits.shape == (b, q, 134) and masks.shape == (b, q, 16, 16)
    assert attn.dtype == torch.bool and attn.shape == (b * predictor.num_heads, q, 16)
    small = torch.nn.functional.interpolate(masks, size=(4, 4), mode="bilinear", align_corners=False)
    expected = (small.sigmoid() < 0.5).flatten(2)
    for i in range(b):
        for h in range(predictor.num_heads):
            assert torch.equal(attn[i * predictor.num_heads + h], expected[i])


# ------------------------------------------------------------------------------------------
# deformable attention
# ------------------------------------------------------------------------------------------
def _naive_ms_deform_attn(value, shapes, locations, weights):
    """Per-sample loops: bilinear read with zeros outside, pixel centres at (i + 0.5) / size."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(n_points):
                        x = locations[b, q, head, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, head, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(d, dtype=value.dtype)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < w and 0 <= yi < h:
                                wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                acc += wgt * value[b, starts[lvl] + yi * w + xi, head]
                        out[b, q, head] += weights[b, q, head, lvl, p] * acc
    return out.reshape(n, lq, m * d)


def _random_msda_case(n=2, m=2, d=3, shapes=((3, 4), (2, 2), (1, 3)), lq=5, n_points=2,
                      dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(3)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=gen, dtype=dtype)
    # include points outside the maps (they read zeros) and exactly on pixel centres / borders
    loc = torch.rand(n, lq, m, len(shapes), n_points, 2, generator=gen, dtype=dtype) * 1.6 - 0.3
    loc[0, 0, 0, 0, 0] = torch.tensor([0.125, 1.0 / 6.0], dtype=dtype)  # centre of pixel (0, 0)
    loc[0, 0, 0, 0, 1] = torch.tensor([0.0, 1.0], dtype=dtype)  # image corner
    weights = torch.rand(n, lq, m, len(shapes), n_points, generator=gen, dtype=dtype)
    shapes_t = torch.tensor(shapes, dtype=torch.long)
    starts = torch.cat((shapes_t.new_zeros(1), shapes_t.prod(1).cumsum(0)[:-1]))
    to = dict(device=device)
    return value.to(**to), shapes_t.to(**to), starts.to(**to), loc.to(**to), weights.to(**to)


@pytest.mark.full_stack
def test_ms_deform_attn_pytorch_matches_naive():
    value, shapes, starts, loc, weights = _random_msda_case()
    expected = _naive_ms_deform_attn(value, shapes.tolist(), loc, weights)
    got = ms_deform_attn(value, shapes, starts, loc, weights, impl="pytorch")
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # float32, shapes as a list, and the "auto" choice on CPU
    got32 = ms_deform_attn(value.float(), [tuple(hw) for hw in shapes.tolist()], None, loc.float(),
                           weights.float(), impl="auto")
    torch.testing.assert_close(got32.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.full_stack
def test_ms_deform_attn_pytorch_gradcheck():
    value, shapes, _, loc, weights = _random_msda_case(n=1, m=2, d=2, shapes=((2, 3), (1, 2)), lq=3)
    # keep points off the integer pixel grid where bilinear interpolation has kinks
    loc = loc.clamp(0.05, 0.95)
    inputs = [t.clone().requires_grad_() for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn_pytorch(v, shapes, l, w), inputs)


@pytest.mark.full_stack
def test_msdeformattn_module_init_and_forward():
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    assert tuple(attn.sampling_offsets.weight.shape) == (4 * 2 * 3 * 2, 32)
    assert tuple(attn.attention_weights.weight.shape) == (4 * 2 * 3, 32)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    bias = attn.sampling_offsets.bias.detach().view(4, 2, 3, 2)
    # head h points along angle 2*pi*h/4, normalised by max(|cos|, |sin|); point k at k + 1
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for h in range(4):
        for lvl in range(2):
            for k in range(3):
                torch.testing.assert_close(bias[h, lvl, k], directions[h] * (k + 1), atol=1e-6, rtol=0)
    shapes = [(4, 4), (2, 2)]
    src = torch.randn(2, 20, 32)
    ref = torch.rand(2, 20, 2, 2)
    out = attn(src, ref, src, torch.tensor(shapes))
    assert out.shape == (2, 20, 32)
    out_list = attn(src, ref, src, shapes)
    torch.testing.assert_close(out, out_list)


@pytest.mark.full_stack
def test_position_embedding_sine():
    pe = PositionEmbeddingSine(4, normalize=True)
    x = torch.zeros(1, 7, 3, 5)
    pos = pe(x)
    assert pos.shape == (1, 8, 3, 5)
    i, j = 1, 3
    y_pos = (i + 1) / (3 + 1e-6) * 2 * math.pi
    x_pos = (j + 1) / (5 + 1e-6) * 2 * math.pi
    expected = []
    for coord in (y_pos, x_pos):
        for c in range(4):
            phase = coord / 10000 ** (2 * (c // 2) / 4)
            expected.append(math.sin(phase) if c % 2 == 0 else math.cos(phase))
    torch.testing.assert_close(pos[0, :, i, j], torch.tensor(expected), atol=1e-5, rtol=0)


@pytest.mark.full_stack
@pytest.mark.skipif(not triton_available(), reason="needs CUDA and Triton")
def test_ms_deform_attn_triton_matches_pytorch():
    for shapes, d in ((((3, 4), (2, 2), (1, 3)), 32), (((17, 23), (9, 12), (5, 6)), 24)):
        value, shapes_t, starts, loc, weights = _random_msda_case(
            n=2, m=4, d=d, shapes=shapes, lq=150, n_points=4, dtype=torch.float32, device="cuda")
        inputs = [t.clone().requires_grad_() for t in (value, loc, weights)]
        ref_inputs = [t.clone().requires_grad_() for t in (value, loc, weights)]
        out = ms_deform_attn(inputs[0], shapes_t, starts, inputs[1], inputs[2], impl="triton")
        ref = ms_deform_attn(ref_inputs[0], shapes_t, starts, ref_inputs[1], ref_inputs[2], impl="pytorch")
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(out)
        out.backward(grad)
        ref.backward(grad)
        for ours, theirs, name in zip(inputs, ref_inputs, ("value", "locations", "weights")):
            # location gradients scale with the map size: compare relative to their magnitude
            scale = theirs.grad.abs().max().item()
            torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5 * max(scale, 1.0), rtol=1e-4,
                                       msg=name)
        assert ms_deform_attn(value, shapes_t, starts, loc, weights).shape == out.shape  # "auto"


_INTERPRETER_SCRIPT = r"""
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("msda_interpreted", sys.argv[1])
M = importlib.util.module_from_spec(spec)
spec.loader.exec_module(M)
torch.manual_seed(0)
shapes = torch.tensor([[3, 4], [2, 3]])
starts = torch.tensor([0, 12])
v = torch.randn(2, 18, 2, 8)
loc = torch.rand(2, 7, 2, 2, 3, 2) * 1.6 - 0.3
w = torch.rand(2, 7, 2, 2, 3)
a = [t.clone().requires_grad_() for t in (v, loc, w)]
b = [t.clone().requires_grad_() for t in (v, loc, w)]
fused = M._MSDeformAttnTriton.apply(a[0], shapes, starts, a[1], a[2])
plain = M.ms_deform_attn_pytorch(b[0], shapes, b[1], b[2])
g = torch.randn_like(fused)
fused.backward(g)
plain.backward(g)
torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
for x, y in zip(a, b):
    torch.testing.assert_close(x.grad, y.grad, atol=1e-4, rtol=1e-4)
print("ok")
"""


def _run_interpreted(script, *args, timeout=300):
    """Runs ``script`` in a fresh Python with TRITON_INTERPRET=1 (read at import) and checks that
    it succeeds and prints "ok"; skips where this Triton cannot interpret the kernels."""
    pytest.importorskip("triton")
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0 and "interpret" in result.stderr.lower() and "not supported" in result.stderr.lower():
        pytest.skip("this Triton has no interpreter for these kernels")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.full_stack
def test_ms_deform_attn_triton_kernels_interpreted():
    """The fused kernels' arithmetic, on CPU through Triton's interpreter (TRITON_INTERPRET=1)."""
    import importlib

    module = importlib.import_module("influencerformer2d.modeling.pixel_decoder.ms_deform_attn")
    _run_interpreted(_INTERPRETER_SCRIPT, module.__file__)


_PIXEL_DECODER_SCRIPT = r"""
import copy, importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("heads_under_test", sys.argv[1])  # this test file
heads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heads)
R50_CHANNELS, _cfg, _features, _input_shape = heads.R50_CHANNELS, heads._cfg, heads._features, heads._input_shape
from detectron2.modeling import build_sem_seg_head
from influencerformer2d.modeling.pixel_decoder import MSDeformAttn

torch.manual_seed(0)
cfg = _cfg()
cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 2  # the interpreter is slow
plain = build_sem_seg_head(cfg, _input_shape(R50_CHANNELS)).pixel_decoder.train()
layers = [m for m in plain.modules() if isinstance(m, MSDeformAttn)]
assert len(layers) == 2
with torch.no_grad():
    # At init every sampling point sits exactly on a pixel centre (integer offsets, zero
    # weights), where bilinear interpolation has a kink and each path's one-sided location
    # gradient depends on rounding; trained offsets are off the grid.
    for m in layers:
        m.sampling_offsets.weight.normal_(0, 0.02)
fused = copy.deepcopy(plain)
for m in fused.modules():
    if isinstance(m, MSDeformAttn):
        m.impl = "triton"
feats = _features(batch=1, image=64)
a = {k: v.clone().requires_grad_() for k, v in feats.items()}
b = {k: v.clone().requires_grad_() for k, v in feats.items()}
outs = []
for model, x in ((fused, a), (plain, b)):
    mask_features, encoder_out, multi_scale = model.forward_features(x)
    outs.append([mask_features, encoder_out, *multi_scale])
grads = [torch.randn_like(t) for t in outs[1]]
for o in outs:
    torch.autograd.backward(o, grads)
for x, y in zip(*outs):
    torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
for k in feats:
    torch.testing.assert_close(a[k].grad, b[k].grad, atol=1e-5 * b[k].grad.abs().max().item(), rtol=1e-4)
for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
    torch.testing.assert_close(p.grad, q.grad, atol=1e-4 * max(1.0, q.grad.abs().max().item()), rtol=1e-4,
                               msg=name)
print("ok")
"""


@pytest.mark.full_stack
def test_pixel_decoder_with_triton_kernels_matches_pytorch_interpreted():
    """The whole deformable encoder + FPN with the fused kernels (as on CUDA) equals the PyTorch
    path, outputs and every gradient, on CPU through Triton's interpreter."""
    _run_interpreted(_PIXEL_DECODER_SCRIPT, os.path.abspath(__file__), timeout=400)
