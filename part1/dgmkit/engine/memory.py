"""The memory check every model family's build runs before it allocates anything: the model's parameters, counted
on the meta device (shapes only, no memory and no random draw), with their gradients and Adam's two moments must
fit in the device's memory; if not, a one-line UserError naming the family's size flags (exit status 2), whether
the sizes were typed or read from a checkpoint being resumed. The engine imports no model wing: a family hands
in how to build its model.
"""
import itertools
import os

import torch

from dgmkit.errors import UserError

BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and Adam's exp_avg and exp_avg_sq: 4 copies of 4 bytes


def memory_bytes(device):
    """The device's whole memory in bytes: a CUDA device's, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _count_on_meta(make_model, kwargs):
    """Parameters of make_model(**kwargs) built on the meta device; None when a tensor's size overflows 64 bits
    (torch refuses the shape: far beyond any memory)."""
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in make_model(**kwargs).parameters())
    except (RuntimeError, TypeError, ValueError) as error:
        if "overflow" in str(error).lower():
            return None
        raise


def parameter_count(make_model, depths=None):
    """The parameter count of make_model(**depths), counted on the meta device; None when a tensor's size would
    overflow 64 bits.

    depths: {keyword: layer count} for counts where every layer adds the same parameters (given the other
    settings), so that the count is multilinear in them: the model is built with each at 1 and at 2 only, and
    the count interpolated exactly, f(x) = sum over the corners c of f(c) prod_i (x_i - 1 if c_i = 2 else 2 - x_i).
    A model a million layers deep is counted in the time of one of two layers (building it, even on the meta
    device, would take hours). None or {}: make_model() is built as it is.
    """
    depths = depths or {}
    names = list(depths)
    total = 0
    for corner in itertools.product((1, 2), repeat=len(names)):
        count = _count_on_meta(make_model, dict(zip(names, corner)))
        if count is None:
            return None
        weight = 1
        for name, at in zip(names, corner):
            weight *= depths[name] - 1 if at == 2 else 2 - depths[name]
        total += weight * count
    return total


def _flag_list(flags):
    names = [f"--{name}" for name in flags]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_fits(make_model, device, size_flags, depths=None):
    """Refuse (one-line UserError naming size_flags, the family's settings that size its model) a model whose
    parameters, with gradients and Adam's two moments (BYTES_PER_PARAMETER each), would not fit in the device's
    memory; nothing is allocated. make_model and depths: as parameter_count. Returns the parameter count."""
    count = parameter_count(make_model, depths)
    have = memory_bytes(device)
    if count is None:
        raise UserError(f"the model does not fit: one of its weight tensors would have more elements than 64-bit "
                        f"sizes can count, and the {device.type} has {have / 2**30:,.0f} GiB; lower "
                        f"{_flag_list(size_flags)}")
    need = BYTES_PER_PARAMETER * count
    if need > have:
        raise UserError(f"the model does not fit: {count:,} parameters need about {need / 2**30:,.0f} GiB for "
                        f"weights, gradients and Adam state, and the {device.type} has {have / 2**30:,.0f} GiB; "
                        f"lower {_flag_list(size_flags)}")
    return count
