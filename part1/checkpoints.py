"""Files a run writes, never left half-written, and checkpoints that cannot run code.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed over
the target with os.replace (atomic on POSIX): a crash or a full disk leaves the old file or the new
one, never a torn one. Loads use torch.load(weights_only=True), which refuses pickled objects other
than tensors and plain Python values, so a crafted checkpoint cannot execute code; the dict's
structure is then checked in one place (`load_checkpoint`).

A checkpoint is a dict: model, optimizer (state dicts), epoch, best_val_bpd, best_epoch, args (the
run's settings, a dict of plain values), wall_time_s, rng (every random state: torch, cuda, numpy,
python, data order).
"""
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import torchvision

from cli_common import UserError, first_line


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or for another model (one-line message, exit 2)."""


def _atomic_write(path, write):
    """Write through `write(file)` into path.tmp, fsync, rename over `path`; on failure remove the
    temporary file, keep the old `path`, and raise a one-line UserError naming the file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or first_line(error)}; "
                        f"{path.name} is unchanged (free disk space or fix the folder's permissions)") from None


def write_bytes(path, data):
    _atomic_write(path, lambda f: f.write(data))


def write_text(path, text):
    write_bytes(path, text.encode())


def write_json(path, obj):
    """`obj` as indented, strict JSON (NaN/Inf become null)."""
    write_text(path, json.dumps(_json_safe(obj), indent=2) + "\n")


def save_image(path, grid):
    """A [3, H, W] float image in [0, 1] as a PNG (torchvision's encoder)."""
    _atomic_write(path, lambda f: torchvision.utils.save_image(grid, f, format="png"))


def save_checkpoint(path, state):
    """torch.save `state` (a dict of tensors and plain values) to `path` atomically."""
    _atomic_write(path, lambda f: torch.save(state, f))


def check_writable(path, flag=""):
    """A one-line UserError unless `path` (a file to be written later) can be created: its nearest existing
    ancestor must be a folder we can create files in. Creates nothing, so a refused run leaves no trace."""
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise UserError(f"cannot write {what}: it is a folder; give a file path")
    parent = next(p for p in [path.parent, *path.parent.parents] if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what}: {parent} is not a writable folder; choose another path")


def remove_stale_tmp(folder):
    """Delete *.tmp files a killed process left behind (the targets themselves are intact)."""
    for tmp in Path(folder).glob("*.tmp"):
        tmp.unlink(missing_ok=True)


def _json_safe(obj):
    """NaN/inf -> None, recursively, so the file is strict JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# ---- random states ----------------------------------------------------------------------------------

def rng_states(data_order):
    """Every random state the run depends on, as tensors and plain values (loadable with weights_only)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached_gaussian},
        "python": list(random.getstate()[1]),
        "data_order": data_order.get_state(),
    }


def set_rng_states(states, data_order):
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    random.setstate((3, tuple(states["python"]), None))
    data_order.set_state(states["data_order"])


def checkpoint_state(model, optimizer, epoch, best_val_bpd, best_epoch, args_dict, wall_time_s, data_order):
    """The checkpoint dict of the module docstring."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "best_val_bpd": best_val_bpd, "best_epoch": best_epoch, "args": args_dict,
            "wall_time_s": wall_time_s, "rng": rng_states(data_order)}


# ---- loading ----------------------------------------------------------------------------------------

_RESUME_ENTRIES = {"epoch": int, "optimizer": dict, "best_val_bpd": (int, float), "best_epoch": int,
                   "wall_time_s": (int, float), "rng": dict}
_RNG_ENTRIES = ("torch", "cuda", "numpy", "python", "data_order")


def load_checkpoint(path, map_location="cpu", for_resume=False):
    """Load a checkpoint dict safely and check its structure; every failure is a one-line CheckpointError.

    Always required: "model" (a dict) and "args" (a dict with z_dim and num_filters). With
    for_resume, also every entry a resume restores, with the right types, and every RNG state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by format
        if "weights only" in str(error).lower() or "weights_only" in str(error):
            raise CheckpointError(f"{path} holds pickled objects other than tensors and plain values; refusing "
                                  "to load it, since unpickling them could run code") from None
        raise CheckpointError(f"{path} is truncated or corrupt ({first_line(error)[:200]})") from None
    not_ours = f"{path} is not a checkpoint of train_torch.py or is corrupt"
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{not_ours} (no 'model' state dict)")
    if not isinstance(state.get("args"), dict) or not {"z_dim", "num_filters"} <= state["args"].keys():
        raise CheckpointError(f"{not_ours} ('args' does not record the run's settings)")
    if for_resume:
        for name, kind in _RESUME_ENTRIES.items():
            if not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
                raise CheckpointError(f"{not_ours} (no valid '{name}' entry; it cannot be resumed)")
        missing = [name for name in _RNG_ENTRIES if name not in state["rng"]]
        if missing:
            raise CheckpointError(f"{not_ours} (random states {', '.join(missing)} missing; it cannot be resumed)")
    return state


FAMILY = ("z_dim", "num_filters", "flow", "flow_length")  # what the saved weights' shapes depend on
FAMILY_DEFAULTS = {"flow": "none", "flow_length": 0}  # checkpoints from before flows existed


def check_model_fits(state, path, requested):
    """Raise a one-line CheckpointError unless the checkpoint's model is the `requested` one
    (a dict with the FAMILY entries)."""
    saved = {name: state["args"].get(name, FAMILY_DEFAULTS.get(name)) for name in FAMILY}
    differ = [name for name in FAMILY if saved[name] != requested[name]]
    if differ:
        have = ", ".join(f"{n}={saved[n]}" for n in differ)
        want = ", ".join(f"{n}={requested[n]}" for n in differ)
        raise CheckpointError(f"{path} holds a model with {have}, but {want} was requested; "
                              "drop those flags or pass the checkpoint's values")
