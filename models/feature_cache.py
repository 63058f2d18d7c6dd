"""The frozen image tower's outputs for every training sample, computed once and memory-mapped
from a folder, so that training steps run only the adapters, the prompts and the losses
(models/train.py; `--no-cache` turns it off).

    DIR/patch-R.npy  [n,L,P,E] float32  the tapped blocks' patch tokens after ln_post and proj
    DIR/image-R.npy  [n,E]     float32  the normalised class embedding
    DIR/mask-R.npy   [n,S,S]   uint8    the synthetic anomaly's mask
    DIR/manifest.json                   what they were computed from, and each shard's samples

Rank R of W builds shard R (a contiguous block of the samples) and writes only its own files;
rank 0 writes the manifest last, once every shard is complete. Every rank reads the rows of its
batches from all shards, so DIR must be a folder all ranks see (a shared filesystem across
machines). The manifest's key names the CLIP model, a SHA-256 of its frozen image tower's
weights, the image size, the taps, the precision, the synthesis seed, the sample count and the
data files (path, size, modification time): a folder whose manifest differs is rebuilt.
"""

import hashlib
import json
import pathlib
import shutil

import numpy as np
import torch

import distributed

MANIFEST = "manifest.json"
FORMAT = 1
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, precision):
    """Autocast to `precision` ("fp32": none) on `device`'s type."""
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def key_of(model, samples, precision):
    """What the cached features depend on (the manifest's key)."""
    weights = hashlib.sha256()
    for name, tensor in model.clip.visual.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    files = hashlib.sha256()
    for path in samples.paths:
        stat = pathlib.Path(path).stat()
        files.update(f"{pathlib.Path(path).resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {
        "format": FORMAT,
        "clip": model.config.clip,
        "image_tower_sha256": weights.hexdigest(),
        "image_size": model.config.image_size,
        "taps": list(model.config.taps),
        "precision": precision,
        "synthesis_seed": samples.seed,
        "samples": len(samples),
        "data_files": len(samples.paths),
        "data_files_sha256": files.hexdigest(),
    }


def bytes_per_sample(model):
    """Disk bytes of one sample: L*P*E + E float32 values and an S*S byte mask."""
    embed = model.clip.visual.proj.shape[1]
    patches = model.grid * model.grid
    return 4 * (len(model.config.taps) * patches * embed + embed) + model.config.image_size**2


class FeatureCache:
    """The shards of a complete cache folder, read-only; `built` says whether this run built them."""

    def __init__(self, directory, manifest, built):
        self.built = built
        self.starts = [start for start, _ in manifest["shards"]]
        self.shards = [
            {name: np.load(directory / f"{name}-{r}.npy", mmap_mode="r") for name in ("patch", "image", "mask")}
            for r in range(len(manifest["shards"]))
        ]

    def batch(self, indices, device):
        """The frozen features (as ClipAda.frozen_features gives them) and masks of samples `indices`."""
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1

        def rows(name):
            stacked = np.stack(
                [self.shards[s][name][i - self.starts[s]] for s, i in zip(shard_of, indices, strict=True)]
            )
            return torch.from_numpy(stacked).to(device)

        return {"patch": rows("patch"), "image": rows("image")}, rows("mask").float()


def prepare(model, samples, directory, budget_gb, precision, batch, device, log=print):
    """The FeatureCache of `samples` in `directory` (reused when its manifest matches, else built
    with batches of `batch`), or None when it would exceed `budget_gb` (10^9 bytes) or the disk's
    free space: the caller then computes the features every step."""
    directory = pathlib.Path(directory)
    key = key_of(model, samples, precision)
    size = len(samples) * bytes_per_sample(model)

    def decide():
        manifest = directory / MANIFEST
        if manifest.exists() and json.loads(manifest.read_text())["key"] == key:
            return "reuse"
        if size > budget_gb * 1e9:
            return f"{size / 1e9:.1f} GB would exceed --cache-budget-gb {budget_gb:g}"
        directory.mkdir(parents=True, exist_ok=True)
        if size > shutil.disk_usage(directory).free:
            return f"{size / 1e9:.1f} GB would not fit the free space of {directory}"
        return "build"

    decision = distributed.from_rank0(decide)
    if decision not in ("reuse", "build"):
        log(f"feature cache off: {decision}")
        return None
    if decision == "build":
        log(f"feature cache: computing {len(samples)} samples ({size / 1e9:.2f} GB) into {directory}")
        build(model, samples, directory, key, precision, batch, device)
    if not (directory / MANIFEST).exists():
        raise SystemExit(
            f"{directory / MANIFEST}, written by rank 0, is not visible here: --cache-dir must be "
            "a folder all ranks see (or give --no-cache)"
        )
    manifest = json.loads((directory / MANIFEST).read_text())
    return FeatureCache(directory, manifest, built=decision == "build")


def build(model, samples, directory, key, precision, batch, device):
    """Each rank computes its shard; rank 0 then writes the manifest."""
    rank, world = distributed.rank(), distributed.world()
    if rank == 0:
        (directory / MANIFEST).unlink(missing_ok=True)
        for old in directory.glob("*.npy"):
            old.unlink()
    distributed.barrier()
    bounds = np.linspace(0, len(samples), world + 1).astype(int)
    shards = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    start, stop = shards[rank]
    size = model.config.image_size
    embed = model.clip.visual.proj.shape[1]
    shapes = {
        "patch": ((stop - start, len(model.config.taps), model.grid**2, embed), np.float32),
        "image": ((stop - start, embed), np.float32),
        "mask": ((stop - start, size, size), np.uint8),
    }
    arrays = {
        name: np.lib.format.open_memmap(directory / f"{name}-{rank}.npy", mode="w+", dtype=dtype, shape=shape)
        for name, (shape, dtype) in shapes.items()
    }
    for first in range(start, stop, batch):
        indices = list(range(first, min(first + batch, stop)))
        images, masks = samples.batch(indices)
        with torch.no_grad(), autocast(device, precision):
            frozen = model.frozen_features(images.to(device))
        rows = slice(first - start, first - start + len(indices))
        arrays["patch"][rows] = frozen["patch"].float().cpu().numpy()
        arrays["image"][rows] = frozen["image"].float().cpu().numpy()
        arrays["mask"][rows] = masks.numpy().astype(np.uint8)
    for array in arrays.values():
        array.flush()
    del arrays
    distributed.barrier()
    if rank == 0:
        partial = directory / f"{MANIFEST}.partial"
        partial.write_text(json.dumps({"key": key, "shards": shards}, indent=1))
        partial.replace(directory / MANIFEST)
    distributed.barrier()
