#!/usr/bin/env python3
"""Seconds per training step of CLIP-ADA with random CLIP weights (no download), to size a
training run on a machine: `python models/bench_train_step.py [--clip ViT-B-16] [--image-size 224]
[--taps 6 9 12] [--batch 8] [--steps 2]`."""

import argparse
import pathlib
import sys
import time

import open_clip
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import clipada_torch  # noqa: E402
import train  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--taps", type=int, nargs="+", default=[6, 9, 12])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    config = clipada_torch.ModelConfig(clip=args.clip, image_size=args.image_size, taps=tuple(args.taps))
    clip = open_clip.create_model(args.clip, force_image_size=args.image_size).eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    model = clipada_torch.ClipAda(config, clip).to(args.device)
    images = train.find_images(images=pathlib.Path(__file__).resolve().parent / "samples" / "part" / "train" / "good")
    started = time.time()
    train.train(model, images, args.steps, args.batch, 1e-3, 0, args.device, log=lambda _: None)
    seconds = (time.time() - started) / args.steps
    print(f"{args.clip} at {args.image_size}, batch {args.batch}, {args.device}: {seconds:.2f} s per step")


if __name__ == "__main__":
    main()
