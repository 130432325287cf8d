"""A training run's setup, new or resumed, in one place: `start_run` yields the settings (a resumed run's own,
with only the flags a resume may change taken from the command line), the checkpoint to continue from, the
data, the hardware choices and the locked run folder; `Run.restore` puts a resumed run's weights, optimizer,
random states and history back, and `Run.save` writes the checkpoints that make a resume exact.
"""
import contextlib
import dataclasses
import math
import random
import time
from typing import Optional

import numpy as np
import torch

from dgmkit.cli.args import resolve_path
from dgmkit.data.datasets import load_data
from dgmkit.data.folders import resolve_data_dir
from dgmkit.engine import hardware
from dgmkit.engine.hardware import resolve_device
from dgmkit.engine.settings import RunConfig
from dgmkit.errors import UserError
from dgmkit.runs import paths
from dgmkit.runs.checkpoints import check_model_fits, checkpoint_state, load_checkpoint, restore_training_state
from dgmkit.runs.folder import RunDir

# Flags a resumed run may change; every other setting comes from the run being resumed.
RESUME_MAY_CHANGE = ("epochs", "device", "precision", "num_workers", "eval_batch_size", "final_iw_samples",
                     "progress_bar", "data_dir", "compile", "sample_epochs")


def seed_everything(seed):
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_cuda(deterministic, precision="auto"):
    """TF32 matmuls/convs unless --precision fp32 (which then means fp32: TF32 keeps 10 bits of mantissa), and cuDNN
    autotuning unless bitwise determinism is requested. Global flags, only ever set for a CUDA run."""
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def resumed_settings(config):
    """The settings of the run in config.resume, with the flags a resume may change taken from `config`.

    A flag the user typed (config.given) that contradicts the run is a one-line UserError: a resumed run must
    compute exactly what the uninterrupted run would have. The recorded paths are read against the run folder
    where it is now (runs/paths.py: relative to it, or absolute in older records) and compared with a typed one as
    folders (the same folder, however written, is no contradiction); the merged config holds them absolute.
    Returns (merged config of config's class, checkpoint state); a checkpoint of another family (another script)
    is a one-line CheckpointError.
    """
    family, script = type(config), type(config).SCRIPT.name
    path = RunDir(config.resume).checkpoint("last")
    if not path.is_file():
        raise UserError(f"--resume {config.resume}: no checkpoint at {path}; pass a run folder of {script} "
                        "that finished at least one epoch")
    state = load_checkpoint(path, for_resume=True, required=family.REQUIRED, script=script)
    family.check_saved(state["args"], f"{path}, args")
    saved, new, default = state["args"], config.to_dict(), family.defaults()
    given = set(config.given) - {"resume"}
    check_model_fits(state, path, {k: new[k] if k in given else saved.get(k, default[k]) for k in family.SHAPE_KEYS},
                     family.SHAPE_KEYS, family.SHAPE_DEFAULTS)
    merged = {**default, **saved, "resume": new["resume"]}
    # The log_dir of a run is the folder it lives in, where it is now (it may have been copied or moved; older
    # records hold the writer's absolute path): args.json records ".." again.
    merged["log_dir"] = str(resolve_path(config.resume, "--resume").parent)
    merged["data_dir"] = str(resolve_data_dir(merged["data_dir"], config.resume, merged["dataset"]))
    for name in sorted(given):
        if new[name] == merged.get(name) or (name in paths.RECORDED and paths.same_folder(new[name], merged[name])):
            continue
        if name not in RESUME_MAY_CHANGE:
            may_change = [flag for flag in RESUME_MAY_CHANGE if flag in default]  # the flags this family has
            raise UserError(f"--{name} {new[name]} differs from the resumed run's {merged.get(name)}; a resumed run "
                            f"keeps its settings (only --{', --'.join(may_change)} may change)")
        merged[name] = new[name]
    if "data_dir" in given:
        merged["data_dir"] = str(resolve_path(new["data_dir"], "--data_dir"))
    resumed = family.from_dict(merged, config.given)
    if resumed.epochs < state["epoch"]:
        raise UserError(f"--epochs {resumed.epochs} is fewer than the {state['epoch']} epochs {config.resume} has "
                        f"trained; pass --epochs {state['epoch']} or more")
    return resumed, state


def where(device):
    """The machine a segment of a run trains on, as far as `auto` depends on it: the device type, its name (the GPU's,
    else the CPU model) and the CPUs this process may use."""
    found = hardware.machine(device)
    return {"device": device.type, "device_name": found["device_name"], "cpus": found["cpus"]}


def speed_choices(config, device, num_train, saved, start_epoch=1, saved_precision=None):
    """What precision, compilation, memory format and thread count to use, with `where` they were decided and the
    list of `segments` (from_epoch, where, what was used) of the run so far.

    A new run, or a resume on another machine than the one that decided (a run started on an Ampere GPU resumed on
    a laptop, say): hardware.choose decides `auto` here (an explicit flag stays what it says), and a resume says so in
    a note. A resume on the same machine (or from a record that does not say where) reuses the recorded choices, so
    that it computes exactly what the uninterrupted run would; OMP_NUM_THREADS, when set, wins. Sets torch's threads.
    A --precision typed on a resume that differs from the run's (`saved_precision`, the flag it was started with)
    is decided anew from then on, and noted in one line.
    """
    here = where(device)
    if saved is not None and saved.get("where", here) == here:
        choice = dict(saved)
        if "compile" in config.given and config.compile != "auto":
            choice["compile"] = config.compile == "on"
        if "precision" in config.given and config.precision != saved_precision:
            was = choice["precision"]
            choice["precision"], why, choice["warning"] = hardware.choose_precision(device, config.precision)
            choice["why"] = {**choice.get("why", {}), "precision": why}
            used = {name: choice.get(name) for name in ("precision", "compile", "channels_last", "threads")}
            choice["segments"] = [*choice.get("segments", []), {"from_epoch": start_epoch, "where": here, **used}]
            choice["note"] = (f"--precision {config.precision} (the run had {saved_precision}): precision {was} -> "
                              f"{choice['precision']} from epoch {start_epoch}; the resume is not bit-exact")
        return hardware.apply_threads(choice)  # the recorded thread count: it changes the last bits of the sums
    steps = config.epochs * math.ceil(num_train / config.batch_size)
    choice = hardware.choose(device, config.precision, config.compile, config.channels_last, steps)
    used = {name: choice.get(name) for name in ("precision", "compile", "channels_last", "threads")}
    earlier = list((saved or {}).get("segments", []))
    choice.update(where=here, segments=[*earlier, {"from_epoch": start_epoch, "where": here, **used}])
    if saved is not None:
        was = saved.get("where", {})
        changes = [f"{name} {saved.get(name)} -> {value}" for name, value in used.items() if saved.get(name) != value]
        choice["note"] = (f"resumed on {here['device_name']} ({here['device']}, {here['cpus']} CPUs), not the "
                          f"{was.get('device_name')} ({was.get('device')}, {was.get('cpus')} CPUs) that decided `auto`: "
                          f"decided again here ({', '.join(changes) or 'the same choices'}); the resume is not "
                          "bit-exact across machines")
    return choice


@dataclasses.dataclass
class Progress:
    """Where training stands: the best validation bpd and its epoch, the epoch records 1..epoch (which every
    checkpoint carries), the last epoch saved, and the wall time of earlier sessions (seconds)."""
    best_val_bpd: float = math.inf
    best_epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    last_saved: int = 0
    earlier_wall_time_s: float = 0.0


@dataclasses.dataclass
class Run:
    """A run being trained: its settings, the checkpoint it resumes (None: a new run), its folder (locked while
    the run lives; a new run's is made by `begin`, once the model is built, so that a refused setting leaves no
    folder) and, unless `finished`, its device, data, hardware choices and data-order generator."""
    config: RunConfig
    state: Optional[dict]
    dir: Optional[RunDir]
    started: float
    finished: bool = False
    device: Optional[torch.device] = None
    loaders: tuple = ()
    choice: Optional[dict] = None
    data_order: Optional[torch.Generator] = None
    holds: Optional[contextlib.ExitStack] = None  # the folder's lock, released when start_run's block ends

    @property
    def start_epoch(self):
        return 1 if self.state is None else self.state["epoch"] + 1

    def settings(self):
        """What args.json and every checkpoint record: the settings, their paths relative to the run folder
        (runs/paths.py), and what `auto` chose. A --device typed on a resume is this segment's (auto_choices'
        `segments` and the machine record say where it ran), not the run's: the recorded one stays, so a run resumed
        once with --device cpu on a laptop trains on the GPU again when resumed on the cluster."""
        settings = self.config.to_dict()
        if self.state is not None and "device" in self.config.given:
            settings["device"] = self.state["args"].get("device", settings["device"])
        return {**paths.record_settings(settings, self.dir), "auto_choices": self.choice}

    def wall_time_s(self, progress):
        return progress.earlier_wall_time_s + time.time() - self.started

    def begin(self, model, optimizer):
        """Make a new run's folder (locked) and return a fresh Progress; or load a resumed run's weights, optimizer
        and random states (a part that does not fit: one-line CheckpointError), cut history.jsonl back to the
        checkpoint and return its Progress. Then write args.json."""
        progress = Progress()
        if self.state is None:
            self.dir = RunDir.create(self.config.log_dir, self.config.run_stem(), self.config.run_name)
            self.holds.enter_context(self.dir.locked())
        else:
            inexact = restore_training_state(self.state, self.dir.checkpoint("last"), model, optimizer,
                                             self.data_order, self.device)
            if inexact:
                print(f"note: {inexact}", flush=True)
            progress = Progress(self.state["best_val_bpd"], self.state["best_epoch"],
                                self.dir.restore_history(self.state), self.state["epoch"], self.state["wall_time_s"])
        self.dir.write_args(self.settings())
        return progress

    def save(self, model, optimizer, epoch, progress):
        """Checkpoint epoch `epoch`: `best` on a new best validation bpd first, then `last`, so that `last` never
        points to a best epoch whose weights were not saved."""
        kept_cuda = self.state["rng"]["cuda"] if self.state else ()  # a GPU run's states, kept through a CPU resume
        state = checkpoint_state(model, optimizer, epoch, progress.best_val_bpd, progress.best_epoch,
                                 self.settings(), self.wall_time_s(progress), self.data_order, progress.history,
                                 self.device, kept_cuda)
        if progress.best_epoch == epoch:
            self.dir.save_checkpoint("best", state)
        self.dir.save_checkpoint("last", state)
        progress.last_saved = epoch


@contextlib.contextmanager
def start_run(config):
    """Yield the Run of `config`: a new run (a fresh folder under --log_dir) or, with config.resume, that run
    continued from its checkpoints/last.pt. The folder stays locked until the block ends (a new run's from
    Run.begin on).

    A resumed run that already finished all its epochs and its test (a metrics.json of its last epoch: an extended
    run's earlier test does not count) is yielded with finished=True (nothing is loaded or written). A new run's
    folder is made after the data and the model: bad input leaves none.
    """
    started = time.time()
    state = None
    if config.resume:
        config, state = resumed_settings(config)
        run_dir = RunDir(resolve_path(config.resume, "--resume"))
        if state["epoch"] >= config.epochs and run_dir.tested_epoch() == state["epoch"]:
            yield Run(config, state, run_dir, started, finished=True)
            return
    else:
        config = dataclasses.replace(config, data_dir=resolve_path(config.data_dir, "--data_dir"),
                                     log_dir=resolve_path(config.log_dir, "--log_dir"))
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if device.type == "cuda":
        configure_cuda(config.deterministic, config.precision)
    # The whole quantized set in memory (on the GPU when training there); its own generator for the shuffle.
    data_order = torch.Generator().manual_seed(config.seed)
    loaders = load_data(config.data_dir, config.dataset, config.bits, config.batch_size, config.num_workers,
                        download=state is None, generator=data_order, eval_batch_size=config.eval_batch_size,
                        device=device if device.type == "cuda" else None)
    choice = speed_choices(config, device, len(loaders[0].dataset), state and state["args"].get("auto_choices"),
                           1 if state is None else state["epoch"] + 1, state and state["args"].get("precision"))
    if choice.get("note"):  # a resume on another machine: said once, not recorded
        print(f"note: {choice.pop('note')}", flush=True)
    with contextlib.ExitStack() as holds:
        if state is None:
            run_dir = None  # made by Run.begin
        else:
            holds.enter_context(run_dir.locked())  # before anything of the resumed run is touched
            run_dir.check_checkpoint_destination()  # a planted link there: refused before training
            run_dir.remove_stale_tmp()
        yield Run(config, state, run_dir, started, device=device, loaders=loaders, choice=choice,
                  data_order=data_order, holds=holds)


def resume_hint(run_dir, epoch, script):
    """One line on what an interrupted run kept (run_dir None: no folder was made) and how to continue it."""
    if run_dir is None:
        return "no run folder was created; nothing was written"
    return RunDir(run_dir).resume_hint(epoch, script)

