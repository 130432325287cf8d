"""Checkpoints: written atomically (atomic_io), loaded so that they cannot run code.

Loads use torch.load(weights_only=True), which refuses pickled objects other
than tensors and plain Python values, so a crafted checkpoint cannot execute code; the dict's
structure is then checked in one place (`load_checkpoint`).

A checkpoint is a dict: model, optimizer (state dicts), epoch, best_val_bpd, best_epoch, args (the
run's settings, a dict of plain values), wall_time_s, rng (every random state: torch, cuda, numpy,
python, data order).
"""
import math
import random
from pathlib import Path

import numpy as np
import torch

from dgmkit.errors import UserError, first_line
from dgmkit.runs.atomic_io import atomic_write


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or for another model (one-line message, exit 2)."""


def save_checkpoint(path, state):
    """torch.save `state` (a dict of tensors and plain values) to `path` atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


# ---- random states ----------------------------------------------------------------------------------

def rng_states(data_order, device="cpu", kept_cuda=()):
    """Every random state the run depends on, as tensors and plain values (loadable with weights_only).

    The GPUs' generators are read only when the run trains on CUDA (a CPU run never touches CUDA: an exclusive-mode
    GPU in use would refuse it); otherwise `kept_cuda`, the states a resumed checkpoint held, are written again, so
    that a later resume on the GPUs still finds them."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    on_cuda = torch.device(device).type == "cuda"
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if on_cuda else list(kept_cuda),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached_gaussian},
        "python": list(random.getstate()[1]),
        "data_order": data_order.get_state(),
    }


def set_rng_states(states, data_order, device="cpu"):
    """Restore every random state; returns None, or one line on why the run's noise cannot continue exactly (its GPU
    states were written for another device type or number of GPUs: those generators start from the seed instead)."""
    torch.set_rng_state(states["torch"])
    note = None
    if torch.device(device).type == "cuda":
        count = torch.cuda.device_count()
        if len(states["cuda"]) == count:
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            note = (f"the checkpoint holds the random states of {len(states['cuda'])} GPU(s) and this machine has "
                    f"{count}: the GPU noise restarts from the seed, so the resume is not bit-exact")
    elif states["cuda"]:
        note = ("the checkpoint was trained on CUDA and this resume runs on the CPU: its noise comes from another "
                "generator, so the resume is not bit-exact (the GPU states are kept for a later GPU resume)")
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    random.setstate((3, tuple(states["python"]), None))
    data_order.set_state(states["data_order"])
    return note


def checkpoint_state(model, optimizer, epoch, best_val_bpd, best_epoch, args_dict, wall_time_s, data_order,
                     history=None, device="cpu", kept_cuda=()):
    """The checkpoint dict of the module docstring; `history`: the epoch records 1..epoch (what a resume writes
    back to history.jsonl, so that a history file torn or cut after the checkpoint loses nothing); device and
    kept_cuda: as rng_states."""
    optimizers = ({name: opt.state_dict() for name, opt in optimizer.items()} if isinstance(optimizer, dict)
                  else optimizer.state_dict())  # a dict of optimizers: the GAN's two players
    return {"model": model.state_dict(), "optimizer": optimizers, "epoch": epoch,
            "best_val_bpd": best_val_bpd, "best_epoch": best_epoch, "args": args_dict,
            "wall_time_s": wall_time_s, "rng": rng_states(data_order, device, kept_cuda), "history": list(history or [])}


def restore_training_state(state, path, model, optimizer, data_order, device="cpu"):
    """Load a resumed checkpoint's weights, optimizer state and random states into a freshly built run; any
    part that does not fit (other shapes, damaged states) is a one-line CheckpointError naming the file.
    `optimizer`: one torch optimizer, or a dict of them (the GAN's two players), as checkpoint_state saved it.
    Returns None, or one line on why the resume cannot be bit-exact on `device` (set_rng_states)."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its weights do not match the model its args describe "
                              f"({first_line(error)[:160]}); the checkpoint is damaged") from None
    optimizers = optimizer if isinstance(optimizer, dict) else {None: optimizer}
    saved_all = state["optimizer"] if isinstance(optimizer, dict) else {None: state["optimizer"]}
    for name, opt in optimizers.items():
        if not _optimizer_state_fits(opt, saved_all.get(name) if isinstance(saved_all, dict) else None):
            raise CheckpointError(f"{path}: its optimizer state does not match the model's parameters; the "
                                  "checkpoint is damaged")
    try:
        for name, opt in optimizers.items():
            opt.load_state_dict(saved_all[name])
        return set_rng_states(state["rng"], data_order, device)  # None, or why the resume is not bit-exact
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise CheckpointError(f"{path}: its optimizer or random states are damaged ({first_line(error)[:160]}); "
                              "a resume could not continue the run exactly") from None


def _optimizer_state_fits(optimizer, saved):
    """Whether a saved optimizer state dict has the optimizer's parameter groups and per-parameter shapes."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        counts = [len(group["params"]) for group in saved["param_groups"]]
        shapes_fit = all((torch.is_tensor(value) and (value.dim() == 0 or value.shape == parameters[int(i)].shape))
                         or (isinstance(value, (int, float)) and not isinstance(value, bool))  # "step", older torch
                         for i, entry in saved["state"].items() for value in entry.values())
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return False
    return counts == [len(group["params"]) for group in optimizer.param_groups] and shapes_fit


# ---- loading ----------------------------------------------------------------------------------------

_RESUME_ENTRIES = {"epoch": int, "optimizer": dict, "best_val_bpd": (int, float), "best_epoch": int,
                   "wall_time_s": (int, float), "rng": dict}
_RNG_ENTRIES = ("torch", "cuda", "numpy", "python", "data_order")


def load_checkpoint(path, map_location="cpu", for_resume=False, required=("z_dim", "num_filters"),
                    script="train_torch.py"):
    """Load a checkpoint dict safely and check its structure; every failure is a one-line CheckpointError.

    Always required: "model" (a dict) and "args" (a dict with the `required` settings of the family that `script`
    trains; the VAE's by default). With for_resume, also every entry a resume restores, with the right types, and
    every RNG state.
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
    not_ours = f"{path} is not a checkpoint of {script} or is corrupt"
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{not_ours} (no 'model' state dict)")
    if not isinstance(state.get("args"), dict) or not set(required) <= state["args"].keys():
        raise CheckpointError(f"{not_ours} ('args' does not record the run's settings)")
    if for_resume:
        for name, kind in _RESUME_ENTRIES.items():
            if not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
                raise CheckpointError(f"{not_ours} (no valid '{name}' entry; it cannot be resumed)")
        missing = [name for name in _RNG_ENTRIES if name not in state["rng"]]
        if missing:
            raise CheckpointError(f"{not_ours} (random states {', '.join(missing)} missing; it cannot be resumed)")
        _check_progress(state, path)
    return state


def _check_progress(state, path):
    """The resume entries' values agree with each other: 1 <= epoch, 0 <= best_epoch <= epoch, a finite
    non-negative wall time, a bpd that is a number, and (when present) one history record per epoch 1..epoch."""
    epoch, best_epoch = state["epoch"], state["best_epoch"]
    problems = []
    if epoch < 1:
        problems.append(f"epoch {epoch} < 1")
    if not 0 <= best_epoch <= epoch:
        problems.append(f"best_epoch {best_epoch} outside 0..{epoch}")
    if not math.isfinite(state["wall_time_s"]) or state["wall_time_s"] < 0:
        problems.append(f"wall_time_s {state['wall_time_s']}")
    if math.isnan(state["best_val_bpd"]):
        problems.append("best_val_bpd NaN")
    history = state.get("history")
    if history is not None and (not isinstance(history, list) or [
            r.get("epoch") if isinstance(r, dict) else None for r in history] != list(range(1, epoch + 1))):
        problems.append(f"history does not hold one record per epoch 1..{epoch}")
    if problems:
        raise CheckpointError(f"{path} contradicts itself ({'; '.join(problems)}); it cannot be resumed")


def check_model_fits(state, path, requested, keys, key_defaults):
    """Raise a one-line CheckpointError unless the checkpoint's model is the `requested` one (a dict with the
    `keys` entries: the settings the weights' shapes depend on, a config's SHAPE_KEYS; key_defaults: the values
    of checkpoints from before a key existed)."""
    saved = {name: state["args"].get(name, key_defaults.get(name)) for name in keys}
    differ = [name for name in keys if saved[name] != requested[name]]
    if differ:
        have = ", ".join(f"{n}={saved[n]}" for n in differ)
        want = ", ".join(f"{n}={requested[n]}" for n in differ)
        raise CheckpointError(f"{path} holds a model with {have}, but {want} was requested; "
                              "drop those flags or pass the checkpoint's values")
