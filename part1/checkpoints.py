"""Checkpoint and JSON files that are never left half-written, and checkpoints that cannot run code.

Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed over
the target with os.replace (atomic on POSIX): a crash leaves the old file or the new one.
Loads use torch.load(weights_only=True), which refuses pickled objects other than tensors
and plain Python values, so a crafted checkpoint cannot execute code.
"""
import json
import os
from pathlib import Path

import torch


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, unsafe or for another model (one-line message)."""


def _atomic_write(path, write):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path, state):
    """torch.save `state` (a dict of tensors and plain values) to `path` atomically."""
    _atomic_write(path, lambda f: torch.save(state, f))


def write_text(path, text):
    """Write `text` to `path` atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_tmp(folder):
    """Delete *.tmp files a killed process left behind (the targets themselves are intact)."""
    for tmp in Path(folder).glob("*.tmp"):
        tmp.unlink()


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict safely; every failure is a CheckpointError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by format
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if "weights only" in str(error).lower() or "weights_only" in str(error):
            raise CheckpointError(f"{path} holds pickled objects other than tensors and plain values; refusing "
                                  "to load it, since unpickling them could run code") from None
        raise CheckpointError(f"{path} is truncated or corrupt ({first_line[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "args" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of train_torch.py (no 'model' and 'args' entries)")
    return state


def check_model_fits(state, path, z_dim, num_filters):
    """Raise a one-line CheckpointError unless the checkpoint's model has this z_dim and num_filters."""
    saved = state["args"]
    if (saved.get("z_dim"), saved.get("num_filters")) != (z_dim, num_filters):
        raise CheckpointError(f"{path} holds a model with z_dim={saved.get('z_dim')}, num_filters="
                              f"{saved.get('num_filters')}, but z_dim={z_dim}, num_filters={num_filters} was "
                              "requested; drop those flags or pass the checkpoint's values")
