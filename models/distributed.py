"""torch.distributed as models/train.py uses it: the process group of a run started by torchrun
(NCCL on GPUs, gloo on the CPU), and helpers that do nothing in a single process."""

import os

import torch
import torch.distributed as dist


def start(device):
    """Joins torchrun's process group when started by it; returns this process's device
    (cuda:LOCAL_RANK when `device` is a GPU)."""
    if "RANK" not in os.environ or dist.is_initialized():
        return device
    if torch.device(device).type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def stop():
    if dist.is_initialized():
        dist.destroy_process_group()


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world():
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def from_rank0(compute):
    """`compute()` evaluated on rank 0 only, its result sent to every rank (any picklable value)."""
    value = [compute() if rank() == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(value, src=0)
    return value[0]


def gather(value):
    """[value of rank 0, value of rank 1, ...] on every rank (any picklable value)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * world()
    dist.all_gather_object(values, value)
    return values


def mean(tensor):
    """The mean of `tensor` over all ranks."""
    if not dist.is_initialized():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / world()
