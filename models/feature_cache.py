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
data files (path, size, modification time: an image rewritten with the same size and its old
modification time is not noticed): a folder whose manifest differs is rebuilt. The manifest also
records each shard file's size and modification time; a shard that is missing, changed since, or
not of the shape and type of the key is rebuilt too, never read.

The folder holds only these files: one holding anything else (a user's files, a subfolder, a
symbolic link) is refused and left as it is, and a rebuild deletes only the names above.
"""

import hashlib
import json
import pathlib
import re
import shutil

import numpy as np
import torch

import distributed

MANIFEST = "manifest.json"
FORMAT = 2  # 2: the manifest records the shard files' sizes and modification times
OWN = re.compile(r"(patch|image|mask)-\d+\.npy|manifest\.json(\.partial)?")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, precision):
    """Autocast to `precision` ("fp32": none) on `device`'s type."""
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def sha256_of(module):
    """SHA-256 (hex) of `module`'s state: every tensor's name and bytes, in order."""
    weights = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return weights.hexdigest()


def key_of(model, samples, precision):
    """What the cached features depend on (the manifest's key)."""
    files = hashlib.sha256()
    for path in samples.paths:
        stat = pathlib.Path(path).stat()
        files.update(f"{pathlib.Path(path).resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {
        "format": FORMAT,
        "clip": model.config.clip,
        "image_tower_sha256": sha256_of(model.clip.visual),
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


def shapes_of(model, rows):
    """The shape and type of each of a shard's arrays, for a shard of `rows` samples."""
    size, embed = model.config.image_size, model.clip.visual.proj.shape[1]
    return {
        "patch": ((rows, len(model.config.taps), model.grid**2, embed), np.float32),
        "image": ((rows, embed), np.float32),
        "mask": ((rows, size, size), np.uint8),
    }


def foreign(directory):
    """The first entry of `directory` this module did not write (by name and kind), or None."""
    for entry in sorted(directory.iterdir()):
        if entry.is_symlink() or not entry.is_file() or not OWN.fullmatch(entry.name):
            return entry
    return None


def problem(directory, key, model):
    """Why the cache in `directory` cannot be read for `key` (None when it can)."""
    path = directory / MANIFEST
    if not path.exists():
        return f"no {path}"
    try:
        manifest = json.loads(path.read_text())
        if manifest["key"] != key:
            return f"{path} was made for other settings"
        shards, files = manifest["shards"], manifest["files"]
        starts = [start for start, _ in shards]
        stops = [stop for _, stop in shards]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{path} is damaged ({type(error).__name__}: {error})"
    if not shards or starts[0] != 0 or stops[-1] != key["samples"] or starts[1:] != stops[:-1]:
        return f"{path}: its shards {shards} do not cover samples 0..{key['samples']}"
    for r, (start, stop) in enumerate(shards):
        for name, (shape, dtype) in shapes_of(model, stop - start).items():
            file = directory / f"{name}-{r}.npy"
            if not file.is_file():
                return f"{file} is missing"
            stat = file.stat()
            if files.get(file.name) != [stat.st_size, stat.st_mtime_ns]:
                return f"{file} changed since the cache was built"
            try:
                array = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as error:
                return f"{file} is damaged ({error})"
            if array.shape != shape or array.dtype != dtype:
                return f"{file} holds {array.dtype} {array.shape}, not {np.dtype(dtype)} {shape}"
    return None


def prepare(model, samples, directory, budget_gb, precision, batch, device, log=print):
    """The FeatureCache of `samples` in `directory` (reused when its manifest matches and its
    shards are intact, else built with batches of `batch`), or None when it would exceed
    `budget_gb` (10^9 bytes) or the disk's free space: the caller then computes the features
    every step. A `directory` holding anything the cache did not write is refused (SystemExit)."""
    directory = pathlib.Path(directory)
    key = key_of(model, samples, precision)
    size = len(samples) * bytes_per_sample(model)

    def decide():
        if directory.exists() and not directory.is_dir():
            return "refuse", f"--cache-dir {directory} is not a folder"
        if directory.is_dir():
            other = foreign(directory)
            if other is not None:
                return "refuse", (
                    f"{other} was not written by the feature cache: --cache-dir {directory} must be a "
                    "folder of its own (a new one, or one the cache wrote); nothing in it was changed"
                )
            why = problem(directory, key, model)
            if why is None:
                return "reuse", None
        else:
            why = None
        if size > budget_gb * 1e9:
            return "off", f"{size / 1e9:.1f} GB would exceed --cache-budget-gb {budget_gb:g}"
        directory.mkdir(parents=True, exist_ok=True)
        if size > shutil.disk_usage(directory).free:
            return "off", f"{size / 1e9:.1f} GB would not fit the free space of {directory}"
        return "build", why

    decision, why = distributed.from_rank0(decide)
    if decision == "refuse":
        raise SystemExit(why)
    if decision == "off":
        log(f"feature cache off: {why}")
        return None
    if decision == "build":
        if why is not None and (directory / MANIFEST).exists():
            log(f"feature cache: rebuilding, {why}")
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
    """Each rank computes its shard; rank 0 then writes the manifest. Deletes only the files
    this module names (`directory` holds no others: `prepare` checked)."""
    rank, world = distributed.rank(), distributed.world()
    if rank == 0:
        for old in directory.iterdir():
            if OWN.fullmatch(old.name) and (old.is_symlink() or old.is_file()):
                old.unlink()
    distributed.barrier()
    bounds = np.linspace(0, len(samples), world + 1).astype(int)
    shards = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    start, stop = shards[rank]
    arrays = {
        name: np.lib.format.open_memmap(directory / f"{name}-{rank}.npy", mode="w+", dtype=dtype, shape=shape)
        for name, (shape, dtype) in shapes_of(model, stop - start).items()
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
    # Each rank states its own files (what another machine sees of them may lag behind).
    mine = {}
    for name in ("patch", "image", "mask"):
        stat = (directory / f"{name}-{rank}.npy").stat()
        mine[f"{name}-{rank}.npy"] = [stat.st_size, stat.st_mtime_ns]
    files = {name: value for each in distributed.gather(mine) for name, value in each.items()}
    if rank == 0:
        partial = directory / f"{MANIFEST}.partial"
        partial.write_text(json.dumps({"key": key, "shards": shards, "files": files}, indent=1))
        partial.replace(directory / MANIFEST)
    distributed.barrier()
