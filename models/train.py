#!/usr/bin/env python3
"""Trains CLIP-ADA: one model for all product categories, from images of normal parts only.

Each step takes a batch of normal images (every category pooled), turns about half of them
into synthetic anomalies with their masks (models/synthesis.py: Perlin-noise regions filled
with foreign texture, cut-and-paste), runs the model (frozen CLIP, trained adapters and prompt
context) and minimises
    focal(p, mask) + dice(p, mask)   on each tapped layer's abnormal-probability map p,
                                     upsampled to the image (averaged over layers), plus
    cross-entropy(image_logits, any anomaly)   for the class-token branch.
Only the adapters and the prompt context vectors are trained.

Data: `--data ROOT` in the MVTec AD or VisA (1cls split) layout: ROOT/<category>/train/good/*;
or `--images DIR` (any folder of normal images, recursively). `--limit-images N` keeps N per
category (the "marginal training data" setting).

    python models/train.py --clip ViT-B-16 --weights ViT-B-16.bin --image-size 224 \
        --taps 6 9 12 --data /data/mvtec_ad --steps 3000 --out runs/vitb16
    python models/train.py --clip tiny --image-size 64 --taps 2 3 \
        --images models/samples/part/train/good --steps 20 --out /tmp/tiny

Writes OUT/checkpoint.pt every --save-every steps and at the end, and OUT/losses.json.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import clipada_torch  # noqa: E402
import synthesis  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def find_images(data=None, images=None, limit=None):
    """Normal training images: per category under an MVTec/VisA root, or one folder."""
    groups = []
    if data is not None:
        for category in sorted(p for p in pathlib.Path(data).iterdir() if (p / "train" / "good").is_dir()):
            groups.append(
                sorted(p for p in (category / "train" / "good").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            )
    if images is not None:
        groups.append(sorted(p for p in pathlib.Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    if limit is not None:
        groups = [g[:limit] for g in groups]
    found = [p for g in groups for p in g]
    if not found:
        raise SystemExit(f"no training images under {data or images}")
    return found


def load(path, size):
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(image, np.float32) / 255.0


def focal_loss(p, target, gamma=2.0, eps=1e-6):
    p = p.clamp(eps, 1 - eps)
    pt = torch.where(target > 0.5, p, 1 - p)
    return (-((1 - pt) ** gamma) * torch.log(pt)).mean()


def dice_loss(p, target, eps=1.0):
    intersection = (p * target).sum(dim=(-2, -1))
    union = p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    return (1 - (2 * intersection + eps) / (union + eps)).mean()


def loss_of(outputs, masks):
    """Map losses per layer (abnormal probability upsampled to the mask) and the image loss."""
    probabilities = outputs["patch_logits"].softmax(dim=2)[:, :, 1]  # [B,L,h,w]
    size = masks.shape[-2:]
    up = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)  # [B,L,H,W]
    target = masks[:, None].expand_as(up)
    map_loss = focal_loss(up, target) + dice_loss(up, target)
    labels = (masks.flatten(1).max(dim=1).values > 0).long()
    image_loss = F.cross_entropy(outputs["image_logits"], labels)
    return map_loss + image_loss


def batches(paths, size, batch, rng):
    """Endless batches of (normalised images [B,3,S,S], masks [B,S,S])."""
    cache = {}
    mean, std = np.array(clipada_torch.CLIP_MEAN, np.float32), np.array(clipada_torch.CLIP_STD, np.float32)
    while True:
        chosen = rng.choice(len(paths), size=batch)
        images, masks = [], []
        for i in chosen:
            image = cache.setdefault(i, load(paths[i], size))
            other = cache.setdefault(j := int(rng.integers(len(paths))), load(paths[j], size))
            altered, mask = synthesis.synthesize(image, other if j != i else None, rng)
            images.append(((altered - mean) / std).transpose(2, 0, 1))
            masks.append(mask)
        yield torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def train(model, paths, steps, batch, lr, seed, device="cpu", out=None, save_every=0, log=print):
    """Trains `model` (on `device`) in place; returns the loss of each step. With `out`,
    checkpoints every `save_every` steps and at the end."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.trainable(), lr=lr, weight_decay=1e-4)
    data = batches(paths, model.config.image_size, batch, rng)
    losses = []
    started = time.time()
    for step in range(1, steps + 1):
        images, masks = next(data)
        loss = loss_of(model(images.to(device)), masks.to(device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps:
            log(f"step {step}/{steps} loss {np.mean(losses[-10:]):.4f} ({time.time() - started:.0f} s)")
        if out is not None and (step == steps or (save_every and step % save_every == 0)):
            save(model, out, losses)
    return losses


def save(model, out, losses):
    """OUT/checkpoint.pt (config and trained parameters, written atomically), OUT/losses.json."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state(), out / "checkpoint.pt.partial")
    (out / "checkpoint.pt.partial").replace(out / "checkpoint.pt")
    (out / "losses.json").write_text(json.dumps(losses))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="ViT-B-16", help="open_clip model name, or 'tiny' for the test configuration")
    parser.add_argument("--weights", type=pathlib.Path, help="local open_clip weights of --clip (never downloaded)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--taps", type=int, nargs="+", default=[6, 9, 12], help="1-based transformer blocks")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--data", type=pathlib.Path, help="MVTec AD / VisA root: ROOT/<category>/train/good")
    parser.add_argument("--images", type=pathlib.Path, help="a folder of normal images")
    parser.add_argument("--limit-images", type=int, help="at most this many images per category")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    if args.data is None and args.images is None:
        parser.error("give --data or --images")
    config = clipada_torch.ModelConfig(
        clip=args.clip, image_size=args.image_size, taps=tuple(args.taps), prompt_tokens=args.prompt_tokens
    )
    model = clipada_torch.ClipAda(config, clipada_torch.load_clip(config, args.weights)).to(args.device)
    paths = find_images(args.data, args.images, args.limit_images)
    print(
        f"{len(paths)} normal images; training {sum(p.numel() for p in model.trainable())} parameters on {args.device}"
    )
    train(model, paths, args.steps, args.batch, args.lr, args.seed, args.device, args.out, args.save_every)
    print(f"wrote {args.out / 'checkpoint.pt'}")


if __name__ == "__main__":
    main()
