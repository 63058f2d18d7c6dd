#!/usr/bin/env python3
"""Seconds per CLIP-ADA training step with random CLIP weights (no download), to size a training
run on a machine: cached frozen features vs the frozen image tower every step (--no-cache), for
each number of processes (torchrun, DDP; the global batch is split between them) and precision,
in one table with each row's speed-up over the first (1 process, uncached, first precision).

    python models/bench_train_step.py                       # CPU: 1 and 2 processes, fp32
    python models/bench_train_step.py --device cuda --precisions fp32 bf16 --batch 32 --steps 10

A row's step time is (time of warm-up + S steps - time of warm-up) / S after a first warm-up
run, so it leaves out start-up, cache building and the prompts' one-off setup; the cache's
build time is given per sample. On the CPU the processes share --threads threads."""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import open_clip
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import clipada_torch  # noqa: E402
import distributed  # noqa: E402
import feature_cache  # noqa: E402
import train  # noqa: E402

IMAGES = HERE / "samples" / "part" / "train" / "good"
WARM_UP = 1


def random_model(args):
    config = clipada_torch.ModelConfig(clip=args.clip, image_size=args.image_size, taps=tuple(args.taps))
    if args.clip == "tiny":
        return clipada_torch.ClipAda(config, clipada_torch.load_clip(config))
    clip = open_clip.create_model(args.clip, force_image_size=args.image_size).eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clipada_torch.ClipAda(config, clip)


def worker(args):
    """One configuration (in each process under torchrun); rank 0 prints its timings as JSON."""
    device = distributed.start(args.device)
    if torch.device(device).type == "cpu":
        torch.set_num_threads(max(1, args.threads // distributed.world()))
    per_rank = args.batch // distributed.world()
    model = random_model(args).to(device)
    paths = train.find_images(images=IMAGES)
    samples = args.batch * (WARM_UP + args.steps)
    options = dict(samples=samples, cache_dir=args.cache_dir, precision=args.precision, log=lambda _: None)
    build = None
    if args.cache_dir is not None:
        started = time.perf_counter()
        data = train.SampleSet(paths, args.image_size, samples, 0)
        feature_cache.prepare(model, data, args.cache_dir, 1000.0, args.precision, per_rank, device, log=print)
        build = (time.perf_counter() - started) / samples

    def seconds(steps):
        distributed.barrier()
        started = time.perf_counter()
        train.train(model, paths, steps, per_rank, 1e-3, 0, device, **options)
        return time.perf_counter() - started

    seconds(WARM_UP)
    step = (seconds(WARM_UP + args.steps) - seconds(WARM_UP)) / args.steps
    if distributed.rank() == 0:
        print(json.dumps({"step_s": step, "build_s_per_sample": build}))
    distributed.stop()


def run(args, procs, precision, cached):
    """The timings of one configuration, from a worker process (torchrun for several)."""
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    with tempfile.TemporaryDirectory() as cache:
        command = [
            *launcher,
            str(pathlib.Path(__file__).resolve()),
            "--worker",
            *("--clip", args.clip, "--image-size", str(args.image_size), "--taps", *map(str, args.taps)),
            *("--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device),
            *("--precision", precision, "--threads", str(args.threads)),
            *(["--cache-dir", cache] if cached else []),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="ViT-B-16", help="open_clip model name (random weights), or 'tiny'")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--taps", type=int, nargs="+", default=[6, 9, 12])
    parser.add_argument("--batch", type=int, default=8, help="global batch, split between the processes")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--procs", type=int, nargs="+", help="process counts (default: 1 2 on CPU, 1 and all GPUs)")
    parser.add_argument("--precisions", nargs="+", choices=sorted(feature_cache.PRECISIONS), default=["fp32"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads shared by the processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.procs is None:
        gpus = torch.cuda.device_count() if args.device == "cuda" else 0
        args.procs = sorted({1, gpus}) if gpus else [1, 2]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"{args.clip} at {args.image_size}, taps {args.taps}, global batch {args.batch}, {where}")
    print("| processes | precision | frozen tower | s per step | speed-up | cache build, s per sample |")
    print("|---|---|---|---|---|---|")
    baseline = None
    for procs in args.procs:
        for precision in args.precisions:
            for cached in (False, True):
                timing = run(args, procs, precision, cached)
                baseline = baseline or timing["step_s"]
                build = f"{timing['build_s_per_sample']:.3f}" if cached else ""
                print(
                    f"| {procs} | {precision} | {'cached' if cached else 'every step'} | {timing['step_s']:.3f} "
                    f"| {baseline / timing['step_s']:.2f}x | {build} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
