"""Toy example of the condensation Influencer Loss on images: a small convolutional
encoder-decoder trained with ``influencer_core.condensation.InfluencerLoss`` on the synthetic
COCO-format shapes, instances read out around influencers, class-agnostic mask AP on the val split.

In:  the synthetic COCO panoptic data of ``influencer_data.synthetic_2d.generate`` (written into
     ``--data-dir``, kept between runs, reused when complete): ``{split}2017/*.jpg`` and the
     panoptic PNGs + ``annotations/panoptic_{split}2017.json``.  Each "thing" segment (the six
     shapes) is an instance; stuff and void pixels are background (-1).
Model: image (rgb in [-1, 1]) + two pixel-coordinate channels -> a small U-Net (two 2x
     downsamplings) -> per pixel an embedding [D] and one beta logit.
Out: ``--output`` (default ``output/toy_image``): ``metrics.json`` (mask AP, AP50, AP25 of the
     trained model and of the same model before training, run time) and ``toy_image.png``
     (val images: image, ground truth, prediction, beta); the metrics also go to stdout as one
     JSON line.  A folder holding a previous run's files is refused unless ``--overwrite``.

    python examples/toy_image.py                        # defaults: 400 + 50 images of 64 x 64
    python examples/toy_image.py --iters 100 --output /tmp/toy2d --overwrite

Measured with the defaults (1 CPU thread on a 2-core machine shared with other jobs; 4 min 7 s
in all, 234 s of it training): mask AP 25.0, AP50 57.8, AP25 75.2 on the 50 val images (400
shapes); the same model before training: 0.0 / 0.0 / 0.0.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

import _readout
from influencer_core.condensation import InfluencerLoss
from influencer_core.run_files import OutputDirError, prepare_output_dir
from influencer_data.cli import at_least

RUN_MARKERS = ("metrics.json", "*.png")
PICTURE = "toy_image.png"


def argument_parser():
    p = _readout.example_parser(__doc__.split("\n\n")[0], "toy_image", unit="pixels", items="images",
                                iters=800, batch=8, min_size=8)
    p.add_argument("--train-images", type=at_least(1, "training images"), default=400, help="training images")
    p.add_argument("--val-images", type=at_least(1, "val images"), default=50, help="val images to evaluate on")
    p.add_argument("--image-size", type=at_least(16, "pixels"), default=64, help="image side (divisible by 4)")
    p.add_argument("--width", type=at_least(1, "channels"), default=24, help="channels of the first level")
    return p


# ----------------------------------------------------------------------------------------- data
def read_split(root: str, split: str):
    """One split -> (images uint8 [B, H, W, 3], instance ids int64 [B, H, W]: thing segments
    0..K-1 per image in annotation order, stuff and void -1)."""
    with open(os.path.join(root, "annotations", f"panoptic_{split}2017.json")) as f:
        pan = json.load(f)
    thing = {c["id"] for c in pan["categories"] if c.get("isthing")}
    names = {im["id"]: im["file_name"] for im in pan["images"]}
    images, ids = [], []
    for ann in sorted(pan["annotations"], key=lambda a: a["image_id"]):
        images.append(np.asarray(Image.open(os.path.join(root, f"{split}2017", names[ann["image_id"]]))
                                 .convert("RGB")))
        rgb = np.asarray(Image.open(os.path.join(root, f"panoptic_{split}2017", ann["file_name"])).convert("RGB"))
        seg = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        out = np.full(seg.shape, -1, dtype=np.int64)
        k = 0
        for s in ann["segments_info"]:
            if s["category_id"] in thing:
                out[seg == s["id"]] = k
                k += 1
        ids.append(out)
    return np.stack(images), np.stack(ids)


def load_data(args):
    from influencer_data import synthetic_2d  # needs OpenCV and pycocotools

    cache = args.data_dir or os.path.join(args.output, "data")
    root = os.path.join(cache, f"synthetic_2d_{args.train_images}+{args.val_images}_size{args.image_size}"
                               f"_seed{args.data_seed}")
    synthetic_2d.generate(root, num_train=args.train_images, num_val=args.val_images, image_size=args.image_size,
                          seed=args.data_seed)
    return read_split(root, "train"), read_split(root, "val"), root


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


# ---------------------------------------------------------------------------------------- model
def _block(cin, cout, stride=1):
    groups = math.gcd(4, cout)  # 4 groups where the width allows
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(groups, cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(groups, cout), nn.ReLU())


class TinyUNet(nn.Module):
    """rgb [B, 3, H, W] (H, W divisible by 4) -> (embeddings [B, H, W, dim], beta logits [B, H, W]).

    Two pixel-coordinate channels join the input: a convolution alone gives two identical shapes
    the same embedding, wherever they are."""

    def __init__(self, dim: int = 8, width: int = 24):
        super().__init__()
        w = width
        self.enc1 = _block(5, w)
        self.enc2 = _block(w, 2 * w, 2)
        self.enc3 = _block(2 * w, 2 * w, 2)
        self.dec2 = _block(4 * w, 2 * w)
        self.dec1 = _block(3 * w, w)
        self.head = nn.Conv2d(w, dim + 1, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        e1 = self.enc1(torch.cat([x, xs, ys], 1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        out = self.head(d1).permute(0, 2, 3, 1)
        return out[..., :-1], out[..., -1]


@torch.no_grad()
def predict(model, images, args, batch=16):
    """Readout of every image -> list of dicts {'readout' (on the CPU), 'beta' [H, W]}."""
    model.eval()
    out = []
    for s in range(0, len(images), batch):
        emb, logit = model(to_input(images[s:s + batch]).to(args.device))
        beta = torch.sigmoid(logit)
        for e, bt in zip(emb, beta):
            r = _readout.group_by_influencers(e.reshape(-1, e.shape[-1]), bt.reshape(-1), args.beta_threshold,
                                              args.radius, args.min_size)
            out.append({"readout": _readout.Readout(*(t.cpu() for t in r)), "beta": bt.cpu()})
    model.train()
    return out


def evaluate(model, images, ids, args):
    preds = predict(model, images, args)
    metrics = _readout.instance_ap(
        [_readout.masks_from_labels(p["readout"].labels.cpu(), len(p["readout"].scores)) for p in preds],
        [p["readout"].scores.cpu() for p in preds],
        [_readout.masks_from_labels(torch.from_numpy(t.reshape(-1))) for t in ids])
    return metrics, preds


def augment(x, t, gen):
    """Random horizontal / vertical flips of a batch (images [B, 3, H, W], ids [B, H, W])."""
    if float(torch.rand((), generator=gen)) < 0.5:
        x, t = x.flip(-1), t.flip(-1)
    if float(torch.rand((), generator=gen)) < 0.5:
        x, t = x.flip(-2), t.flip(-2)
    return x, t


def train(model, images, ids, args, log=print):
    loss_fn = InfluencerLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / args.iters)))
    gen = torch.Generator().manual_seed(args.seed)
    x_all, t_all = to_input(images), torch.from_numpy(ids)
    k_all = t_all.flatten(1).max(1).values + 1
    loss = None
    for it in range(args.iters):
        pick = torch.randperm(len(images), generator=gen)[:args.batch]
        x, t = augment(x_all[pick], t_all[pick], gen)
        emb, logit = model(x.to(args.device))
        b = x.shape[0]
        out = loss_fn(emb.reshape(b, -1, emb.shape[-1]), logit.reshape(b, -1),
                      t.reshape(b, -1).to(args.device), num_instances=max(int(k_all[pick].max()), 1))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        loss = float(out["loss"].detach())
        if it == 0 or (it + 1) % max(1, args.iters // 10) == 0 or it + 1 == args.iters:
            log(f"iter {it + 1}/{args.iters}  loss {loss:.4f}  (attractive {float(out['attractive']):.4f}, "
                f"repulsive {float(out['repulsive']):.4f}, beta {float(out['beta']):.4f})")
    return loss


# -------------------------------------------------------------------------------------- picture
def _paint(ids, colours, grey):
    out = np.empty(ids.shape + (3,))
    out[:] = grey
    fg = ids >= 0
    if fg.any():
        out[fg] = colours[ids[fg]]
    return out


def draw(images, ids, preds, path, title_note=""):
    """Rows of val images: image, ground truth, prediction, beta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images)
    fig, axes = plt.subplots(rows, 4, figsize=(12, 3.1 * rows + 0.6), squeeze=False)
    for row in range(rows):
        h, w = ids[row].shape
        r = preds[row]["readout"]
        gt_masks = _readout.masks_from_labels(torch.from_numpy(ids[row].reshape(-1)))
        pred_masks = _readout.masks_from_labels(r.labels, len(r.scores))
        color_of = np.asarray(_readout.match_colors(pred_masks, gt_masks), dtype=np.int64)
        palette = _readout.instance_colors(max([gt_masks.shape[0]] + [c + 1 for c in color_of]))
        labels = r.labels.numpy().reshape(h, w)
        pred_colours = palette[color_of] if len(color_of) else palette
        ax = axes[row]
        ax[0].imshow(images[row])
        ax[0].set_title("val image", fontsize=10)
        ax[1].imshow(_paint(ids[row], palette, _readout.BACKGROUND_GREY))
        ax[1].set_title(f"ground truth: {gt_masks.shape[0]} shapes", fontsize=9)
        ax[2].imshow(_paint(labels, pred_colours, _readout.NONE_GREY))
        ax[2].set_title(f"predicted: {len(r.scores)} (matched: GT colour)", fontsize=9)
        im = ax[3].imshow(preds[row]["beta"].numpy(), cmap="viridis", vmin=0, vmax=1)
        infl = r.influencers.numpy()
        ax[3].scatter(infl % w, infl // w, s=25, marker="x", color="red", linewidths=1.2)
        ax[3].set_title("beta (sigmoid), x: influencers", fontsize=9)
        fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.02)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(f"val images{title_note}\nlight grey: background, dark grey: no instance predicted", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    """Run the example; returns the metrics dict (also written to OUTPUT/metrics.json)."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.image_size % 4:
        parser.error(f"--image-size must be divisible by 4 (the network halves it twice), got {args.image_size}")
    try:
        prepare_output_dir(args.output, markers=RUN_MARKERS, resume=False, overwrite=args.overwrite,
                           setting="--output", resumable=False)
    except OutputDirError as exc:
        parser.error(str(exc))
    os.makedirs(args.output, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args):
    """The example after its command line was checked: data, training, evaluation, picture."""
    start = time.time()
    torch.manual_seed(args.seed)
    try:
        (train_images, train_ids), (val_images, val_ids), root = load_data(args)
    except (OSError, ValueError) as exc:  # an unfit data folder: the message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    n_obj = int(sum(t.max() + 1 for t in val_ids))
    print(f"data: {root}: {len(train_images)} training images, {len(val_images)} val images ({n_obj} shapes)")
    model = TinyUNet(args.dim, args.width).to(args.device)
    untrained, _ = evaluate(model, val_images, val_ids, args)
    t_train = time.time()
    train(model, train_images, train_ids, args)
    train_s = time.time() - t_train
    trained, preds = evaluate(model, val_images, val_ids, args)
    # the picture: three val images with a few to many shapes
    counts = np.array([t.max() + 1 for t in val_ids])
    order = np.argsort(counts, kind="stable")
    show = sorted({int(order[int(q * (len(order) - 1))]) for q in (0.5, 0.75, 1.0)})
    draw(val_images[show], val_ids[show], [preds[i] for i in show], os.path.join(args.output, PICTURE),
         f" (trained {args.iters} iterations; mask AP50 over all {len(val_images)} val images "
         f"{trained['AP50']:.1f})")
    metrics = {
        "example": "toy_image", "class_agnostic": True,
        "note": "class-agnostic mask AP (%) on the val split; stuff and void pixels are background",
        "AP": trained["AP"], "AP50": trained["AP50"], "AP25": trained["AP25"],
        "untrained": {k: untrained[k] for k in ("AP", "AP50", "AP25", "num_pred")},
        "num_gt": trained["num_gt"], "num_pred": trained["num_pred"],
        "iters": args.iters, "train_images": len(train_images), "val_images": len(val_images),
        "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - start, 1),
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "overwrite", "data_dir")},
    }
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
