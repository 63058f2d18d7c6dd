#!/usr/bin/env python3
"""Trains CLIP-ADA: one model for all product categories, from images of normal parts only.

The training data are a fixed set of --samples samples: normal images (every category pooled),
about half of them turned into synthetic anomalies with their masks (models/synthesis.py:
Perlin-noise regions filled with foreign texture, cut-and-paste), sample i drawn with a
generator seeded by (--synthesis-seed, i). Each step takes a batch of them (a permutation per
epoch, seeded by --seed), runs the model (frozen CLIP, trained adapters and prompt context) and
minimises
    focal(p, mask) + dice(p, mask)   on each tapped layer's abnormal-probability map p,
                                     upsampled to the image (averaged over layers), plus
    cross-entropy(image_logits, any anomaly)   for the class-token branch.
Only the adapters and the prompt context vectors are trained, so the frozen image tower's
outputs are computed once per sample and cached on disk (models/feature_cache.py; --no-cache:
every step), and a step runs only the adapters, the prompts through the text encoder and the
losses. The cache is used when it is at most --cache-budget-gb and fits the free disk space.

Data: `--data ROOT` in the MVTec AD or VisA (1cls split) layout: ROOT/<category>/train/good/*;
or `--images DIR` (any folder of normal images, recursively). `--limit-images N` keeps N per
category (the "marginal training data" setting).

    python models/train.py --clip ViT-B-16 --weights ViT-B-16.bin --image-size 224 \
        --taps 6 9 12 --data /data/mvtec_ad --steps 3000 --out runs/vitb16
    python models/train.py --clip tiny --image-size 64 --taps 2 3 \
        --images models/samples/part/train/good --steps 20 --samples 64 --out /tmp/tiny
    torchrun --nproc_per_node 4 models/train.py ... --precision bf16 --resume   # 4 GPUs, DDP

Under torchrun each process takes --batch samples of the global batch (--batch x processes),
gradients are averaged by DistributedDataParallel (NCCL on GPUs, gloo on CPUs), so the run gives
the steps of one process with the global batch; rank 0 alone writes the checkpoints. Writes
OUT/checkpoint.pt (atomically) every --save-every steps and at the end, with what --resume needs
to continue (optimiser, step, RNG states, a SHA-256 of the frozen CLIP weights, which a resumed
run's must match), and OUT/losses.json.
"""

import argparse
import functools
import json
import pathlib
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import clipada_torch  # noqa: E402
import distributed  # noqa: E402
import feature_cache  # noqa: E402
import synthesis  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
DEFAULT_SAMPLES = 8192
DEFAULT_CACHE_BUDGET_GB = 40.0


class Refused(ValueError):
    """Settings or files this run cannot use; main() prints the message without a traceback."""


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


@functools.lru_cache(maxsize=256)
def load(path, size):
    """A training image, resized to `size` x `size`, [H,W,3] in [0,1] (kept: do not modify it)."""
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


class SampleSet:
    """A fixed set of `count` training samples (image, mask): sample i is normal image
    i mod len(paths), made into a synthetic anomaly (or left normal) with a generator seeded by
    (seed, i), so every epoch, every process and the feature cache see the same sample i."""

    def __init__(self, paths, size, count, seed):
        self.paths, self.size, self.count, self.seed = list(paths), size, count, seed
        self.mean = np.array(clipada_torch.CLIP_MEAN, np.float32)
        self.std = np.array(clipada_torch.CLIP_STD, np.float32)

    def __len__(self):
        return self.count

    def sample(self, i):
        """The normalised image [3,S,S] and mask [S,S] of sample `i`."""
        rng = np.random.default_rng((self.seed, i))
        source = i % len(self.paths)
        other = int(rng.integers(len(self.paths)))
        foreign = load(self.paths[other], self.size) if other != source else None
        altered, mask = synthesis.synthesize(load(self.paths[source], self.size), foreign, rng)
        return ((altered - self.mean) / self.std).transpose(2, 0, 1), mask

    def batch(self, indices):
        """Normalised images [B,3,S,S] and masks [B,S,S] of samples `indices`."""
        images, masks = zip(*(self.sample(int(i)) for i in indices), strict=True)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def batch_indices(step, count, global_batch, seed):
    """The samples of global batch `step` (1-based): each epoch is a permutation of the `count`
    samples seeded by (seed, epoch), cut into global batches (a tail shorter than one is skipped).
    A function of the step alone, so a resumed run continues the same sequence."""
    per_epoch = count // global_batch
    epoch, k = divmod(step - 1, per_epoch)
    order = np.random.default_rng((seed, epoch)).permutation(count)
    return order[k * global_batch : (k + 1) * global_batch]


class Head(torch.nn.Module):
    """`model.head` as a module of its own: what DistributedDataParallel wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, frozen):
        return self.model.head(frozen)


def parallel_head(model, device):
    """Head(model), wrapped in DistributedDataParallel under torchrun (gradients averaged over
    ranks). DDP leaves out the frozen CLIP and the buffers (the prompts' tokens): every rank
    builds them alike."""
    head = Head(model)
    if distributed.world() == 1:
        return head
    unsynced = [f"model.{n}" for n, _ in model.named_parameters() if n.startswith("clip.")]
    unsynced += [f"model.{n}" for n, _ in model.named_buffers()]
    DDP._set_params_and_buffers_to_ignore_for_model(head, unsynced)
    return DDP(head, device_ids=[device] if torch.device(device).type == "cuda" else None)


def train(
    model,
    paths,
    steps,
    batch,
    lr,
    seed,
    device="cpu",
    out=None,
    save_every=0,
    log=print,
    *,
    samples=DEFAULT_SAMPLES,
    synthesis_seed=0,
    cache_dir=None,
    cache_budget_gb=DEFAULT_CACHE_BUDGET_GB,
    precision="fp32",
    resume=False,
):
    """Trains `model` (on `device`) in place; returns the loss of each step (mean over ranks).

    `batch` is per process: under torchrun the global batch is `batch` x ranks, split in rank
    order, so a run gives the steps of a single process with the global batch. The data are
    SampleSet(paths, samples, synthesis_seed); their frozen features are cached in `cache_dir`
    if they fit `cache_budget_gb` (feature_cache.py), else (or with no `cache_dir`) computed
    every step. `precision`: "fp32", or autocast to "bf16" / "fp16" (with gradient scaling); the
    trained parameters stay float32. With `out`, rank 0 checkpoints every `save_every` steps and
    at the end; `resume` continues from OUT/checkpoint.pt when there is one."""
    torch.manual_seed(seed)
    rank, world = distributed.rank(), distributed.world()
    log = log if rank == 0 else (lambda _: None)
    if samples < batch * world:
        raise Refused(f"--samples {samples} is less than one global batch ({batch} x {world})")
    model.to(device)
    data = SampleSet(paths, model.config.image_size, samples, synthesis_seed)
    cache = None
    if cache_dir is not None:
        cache = feature_cache.prepare(model, data, cache_dir, cache_budget_gb, precision, batch, device, log)
    optimiser = torch.optim.AdamW(model.trainable(), lr=lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
    run = {"global_batch": batch * world, "seed": seed, "samples": samples, "synthesis_seed": synthesis_seed}
    # The frozen CLIP's weights: another --weights file of the same model name has the same config.
    clip_sha256 = feature_cache.sha256_of(model.clip) if out is not None else None
    first, losses = 1, []
    if resume and out is not None:
        first, losses = restore(model, optimiser, scaler, out, run, clip_sha256, log)
        if first > steps:
            checkpoint = pathlib.Path(out) / "checkpoint.pt"
            log(f"{checkpoint} is already at step {first - 1} (--steps {steps}): nothing to train")
    head = parallel_head(model, device)
    started = time.time()
    for step in range(first, steps + 1):
        indices = batch_indices(step, samples, batch * world, seed)[rank * batch : (rank + 1) * batch]
        with feature_cache.autocast(device, precision):
            if cache is not None:
                frozen, masks = cache.batch(indices, device)
            else:
                images, masks = data.batch(indices)
                with torch.no_grad():
                    frozen = model.frozen_features(images.to(device))
            outputs = head(frozen)
        loss = loss_of({k: v.float() for k, v in outputs.items()}, masks.to(device))
        optimiser.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        losses.append(distributed.mean(loss.detach()).item())
        if step % 10 == 0 or step == steps:
            log(f"step {step}/{steps} loss {np.mean(losses[-10:]):.4f} ({time.time() - started:.0f} s)")
        if out is not None and rank == 0 and (step == steps or (save_every and step % save_every == 0)):
            training = {"step": step, "run": run, "optimiser": optimiser.state_dict(), "scaler": scaler.state_dict()}
            save(model, out, losses, {**training, "clip_sha256": clip_sha256, "rng": rng_states()})
            if step == steps:
                log(f"wrote {pathlib.Path(out) / 'checkpoint.pt'}")
    return losses


def rng_states():
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore(model, optimiser, scaler, out, run, clip_sha256, log):
    """Loads OUT/checkpoint.pt (read by rank 0, sent to all) into the model, optimiser, gradient
    scaler and RNGs; returns (first step to run, losses so far), (1, []) without a checkpoint.
    Refuses one of other run settings, model config or frozen CLIP weights (`clip_sha256`). The
    optimiser keeps the learning rate it was built with (this run's --lr), not the saved one."""
    path = pathlib.Path(out) / "checkpoint.pt"

    def read():
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu")
        except Exception as error:  # noqa: BLE001 - any unreadable file: refused below, by name
            return f"{type(error).__name__}: {error}"

    state = distributed.from_rank0(read)
    if state is None:
        log(f"no {path} to resume from: starting at step 1")
        return 1, []
    needed = {"config", "trained", "run", "clip_sha256", "step", "losses", "optimiser", "scaler", "rng"}
    if not isinstance(state, dict) or not needed <= state.keys():
        why = state if isinstance(state, str) else f"it lacks {sorted(needed - set(state))}"
        raise Refused(f"{path} is not a checkpoint train.py can resume ({why}): move it away or start elsewhere")
    if state["run"] != run:
        raise Refused(f"{path} was trained with {state['run']}, this run is {run}: resume it with the same")
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in model.state()["config"].items()}
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in state["config"].items()}
    if saved != config:
        raise Refused(f"{path} is a model of {saved}, this run's is {config}: resume it with the same")
    if state["clip_sha256"] != clip_sha256:
        raise Refused(
            f"{path} was trained on other CLIP weights (clip_sha256 {state['clip_sha256']}, this run's "
            f"{clip_sha256}): resume it with the same --weights"
        )
    device = model.trainable()[0].device
    model.load_state_dict({k: v.to(device) for k, v in state["trained"].items()}, strict=False)
    wanted = [group["lr"] for group in optimiser.param_groups]
    optimiser.load_state_dict(state["optimiser"])
    for group, lr in zip(optimiser.param_groups, wanted, strict=True):
        if group["lr"] != lr:
            log(f"--lr {lr:g}: {path} was trained with lr {group['lr']:g}, continuing with --lr {lr:g}")
            group["lr"] = lr
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    log(f"resuming {path} after step {state['step']}")
    return state["step"] + 1, state["losses"]


def save(model, out, losses, training=None):
    """OUT/checkpoint.pt (config, trained float32 parameters and, from `train`, the step, losses,
    SHA-256 of the frozen CLIP's weights, optimiser, gradient scaler and RNG states; written
    atomically), OUT/losses.json."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed over: a symbolic link in OUT is replaced, never written through.
    for name, write in (
        ("checkpoint.pt", lambda path: torch.save({**model.state(), "losses": losses, **(training or {})}, path)),
        ("losses.json", lambda path: path.write_text(json.dumps(losses))),
    ):
        partial = out / f"{name}.partial"
        partial.unlink(missing_ok=True)
        write(partial)
        partial.replace(out / name)


def parse_args(argv=None):
    """The command line, with numbers outside their range refused by option name."""
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
    parser.add_argument("--batch", type=int, default=8, help="per process (global batch: this x processes)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's (with --resume: replaces the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0, help="initial prompt context and batch order")
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="synthetic training samples (default %(default)s)"
    )
    parser.add_argument("--synthesis-seed", type=int, default=0, help="the synthetic anomalies of the samples")
    parser.add_argument("--cache-dir", type=pathlib.Path, help="feature cache folder (default OUT/cache)")
    parser.add_argument(
        "--cache-budget-gb",
        type=float,
        default=DEFAULT_CACHE_BUDGET_GB,
        help="the cache (samples x (4 x (taps x patches x embed + embed) + size^2) bytes) is used when it is at "
        "most this many GB (10^9 bytes, default %(default)s) and fits the free disk space; else the frozen tower "
        "runs every step",
    )
    parser.add_argument("--no-cache", action="store_true", help="compute the frozen image tower every step")
    parser.add_argument(
        "--precision", choices=sorted(feature_cache.PRECISIONS), default="fp32", help="autocast (bf16 on recent GPUs)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    if args.data is None and args.images is None:
        parser.error("give --data or --images")
    for option, value, least in (
        ("--samples", args.samples, 1),
        ("--batch", args.batch, 1),
        ("--steps", args.steps, 1),
        ("--save-every", args.save_every, 0),
        ("--prompt-tokens", args.prompt_tokens, 1),
        ("--image-size", args.image_size, 1),
        ("--limit-images", args.limit_images, 1),
    ):
        if value is not None and value < least:
            parser.error(f"{option} {value}: must be at least {least}")
    if not args.cache_budget_gb == args.cache_budget_gb:  # NaN
        parser.error("--cache-budget-gb nan: give a number of GB")
    return args


def main():
    args = parse_args()
    device = distributed.start(args.device)
    config = clipada_torch.ModelConfig(
        clip=args.clip, image_size=args.image_size, taps=tuple(args.taps), prompt_tokens=args.prompt_tokens
    )
    torch.manual_seed(args.seed)
    model = clipada_torch.ClipAda(config, clipada_torch.load_clip(config, args.weights))
    paths = find_images(args.data, args.images, args.limit_images)
    if distributed.rank() == 0:
        print(
            f"{len(paths)} normal images, {args.samples} samples; training "
            f"{sum(p.numel() for p in model.trainable())} parameters on {distributed.world()} x {device}"
        )
    try:
        train(
            model,
            paths,
            args.steps,
            args.batch,
            args.lr,
            args.seed,
            device,
            args.out,
            args.save_every,
            samples=args.samples,
            synthesis_seed=args.synthesis_seed,
            cache_dir=None if args.no_cache else (args.cache_dir or args.out / "cache"),
            cache_budget_gb=args.cache_budget_gb,
            precision=args.precision,
            resume=args.resume,
        )
    except Refused as error:
        raise SystemExit(f"train.py: {error}") from None
    distributed.stop()


if __name__ == "__main__":
    main()
