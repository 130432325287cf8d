"""The run folder: `RunDir` alone knows its layout and reads and writes every file of it (part1/README.md,
"What a run writes").

    <log_dir>/<date>_<time>_z<z_dim>/      (or --run_name)
        args.json               the run's settings (updated on resume), plus what `auto` chose
        history.jsonl           one JSON object per epoch: epoch, seconds, {train,val}_{bpd,rec_nats,kl_nats},
                                train_objective_bpd
        metrics.json            the test results of the best-by-validation model
        eval_<split>.json       evaluate.py's results; reconstructions_<split>.png, interpolations_<split>.png
        samples_epoch_XXX.png   sample grids; vae_manifold.png (z_dim 2); interpolation.png (the GAN)
        checkpoints/{best,last}.pt
        events.out.tfevents.*   TensorBoard (scalars, images, the custom-scalars layout and the HParams)

Every path a record names (data_dir, log_dir, resume, checkpoint) is relative to the run folder, so that the folder
still evaluates and resumes after it is copied elsewhere: dgmkit/runs/paths.py. Every file goes through atomic_io's
atomic writes. Names: `bpd` is the negative ELBO in bits per dimension, `rec_nats` -log p(x|z) and `kl_nats` the KL
term in nats per image (bpd = (rec_nats + kl_nats) log2(e) / D), `iw_bpd` the negative importance-weighted bound;
`_se` a standard error over images. Every quantity is a loss: lower is better.
"""
import contextlib
import fcntl
import json
import os
import re
import shlex
from datetime import datetime
from pathlib import Path

from dgmkit.errors import UserError, first_line
from dgmkit.runs.atomic_io import check_destination, remove_stale_tmp, write_json, write_png, write_text
from dgmkit.runs.checkpoints import load_checkpoint, save_checkpoint
from dgmkit.runs.schema import HISTORY_FIELDS, check_fields

LOCK = ".lock"
CHECKPOINTS = ("best", "last")  # checkpoints/best.pt: the best validation bpd so far; last.pt: the newest epoch
PICTURES = ("reconstructions", "interpolations")  # evaluate.py's pictures, one pair per split
FIGURES = ("interpolation",)  # a training run's own figures besides samples and manifold


def read_json(path):
    """The JSON object in `path`; None when the file is absent; a one-line UserError when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({first_line(error)}); restore it or rerun") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return value


class RunDir:
    """One run folder: its paths, its lock, and the reading and writing of each of its files.

    `RunDir(path)` names an existing (or resumed) folder; `RunDir.create(log_dir, ...)` makes a fresh one.
    """

    ARGS, HISTORY, METRICS = "args.json", "history.jsonl", "metrics.json"

    def __init__(self, path):
        self.path = Path(path)

    def __fspath__(self):
        return str(self.path)

    def __str__(self):
        return str(self.path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, log_dir, stem, name=None):
        """A fresh run folder (with checkpoints/) under `log_dir`, named `name` or <date>_<time>_<stem> (the
        VAE's stem: z<z_dim>; with _1, _2, ... when that exists); never reuses an existing one."""
        stamp = name or f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{stem}"
        try:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            for attempt in range(1 if name else 1000):
                run = cls(Path(log_dir) / (stamp if attempt == 0 else f"{stamp}_{attempt}"))
                try:
                    run.path.mkdir()
                except FileExistsError:
                    continue
                run.checkpoint_dir.mkdir()
                return run
        except OSError as error:
            raise UserError(f"cannot create a run folder in --log_dir {log_dir}: {error.strerror}; "
                            "choose a writable folder") from None
        raise UserError(f"--log_dir {log_dir} already holds a run named {stamp}; resume it with --resume or "
                        "choose another --run_name")

    @classmethod
    def of_checkpoint(cls, path):
        """The run folder a checkpoint file belongs to (<run>/checkpoints/x.pt -> <run>; else its folder)."""
        path = Path(path)
        return cls(path.parent.parent if path.parent.name == "checkpoints" else path.parent)

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def name(self):
        return self.path.resolve().name

    @property
    def checkpoint_dir(self):
        return self.path / "checkpoints"

    def checkpoint(self, which="last"):
        if which not in CHECKPOINTS:
            raise ValueError(f"which must be one of {CHECKPOINTS}, got {which!r}")
        return self.checkpoint_dir / f"{which}.pt"

    def eval_path(self, split):
        return self.path / f"eval_{split}.json"

    def picture_path(self, kind, split):
        return self.path / f"{kind}_{split}.png"

    def samples_path(self, epoch):
        return self.path / f"samples_epoch_{epoch:03d}.png"

    @property
    def manifold_path(self):
        return self.path / "vae_manifold.png"

    def figure_path(self, name):
        if name not in FIGURES:
            raise ValueError(f"name must be one of {FIGURES}, got {name!r}")
        return self.path / f"{name}.png"

    # ---- the lock --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Hold the run folder's lock for the block: a second process that wants to write into the same run
        (a training, a resume, an evaluation, a sweep about to remove an unstarted point) gets a one-line
        UserError instead of interleaving its files. An advisory flock on .lock (opened without following a
        link), released when the process ends, even by SIGKILL.

        The file stays when the lock is released: removing it would let a process that opened it just before
        lock the removed file while a third one locks a new .lock, two holders of one folder. Only "someone
        else holds it" (EWOULDBLOCK) is reported as a folder in use; any other failure (a file system without
        lock support, say) is reported as what it is.
        """
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise UserError(f"cannot lock the run folder {self} ({path}: {error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"the run folder {self} is in use by another process (a training, resume, "
                            "evaluation or sweep); wait for it to finish or stop it, then retry") from None
        except OSError as error:
            os.close(fd)
            raise UserError(f"cannot lock the run folder {self} ({path}: {error.strerror}): its file system may "
                            "not support file locks; use a run folder on a local disk") from None
        try:
            yield self
        finally:
            os.close(fd)  # releases the lock; the file stays (see above)

    def remove_stale_tmp(self):
        """The temporary files a SIGKILLed writer left in the folder and in checkpoints/ (atomic_io)."""
        remove_stale_tmp(self.checkpoint_dir)
        remove_stale_tmp(self.path)

    # ---- settings, checkpoints, pictures ---------------------------------------------------------
    def write_args(self, settings):
        write_json(self.path / self.ARGS, settings)

    def read_args(self):
        return read_json(self.path / self.ARGS)

    def save_checkpoint(self, which, state):
        save_checkpoint(self.checkpoint(which), state)

    def load_checkpoint(self, which="last", **kwargs):
        return load_checkpoint(self.checkpoint(which), **kwargs)

    def has_checkpoint(self, which="last"):
        return self.checkpoint(which).is_file()

    def check_checkpoint_destination(self):
        """A planted link at checkpoints/last.pt is refused (one line) before a resume trains anything."""
        check_destination(self.checkpoint("last"))

    def save_samples(self, epoch, grid):
        write_png(self.samples_path(epoch), grid)

    def save_manifold(self, grid):
        write_png(self.manifold_path, grid)

    def save_picture(self, kind, split, grid):
        write_png(self.picture_path(kind, split), grid)

    def save_figure(self, name, grid):
        write_png(self.figure_path(name), grid)

    def samples(self):
        """{epoch: path} of the sample grids, in epoch order."""
        found = {int(m.group(1)): p for p in self.path.glob("samples_epoch_*.png")
                 if (m := re.fullmatch(r"samples_epoch_(\d+)\.png", p.name)) and p.is_file()}
        return dict(sorted(found.items()))

    def manifold(self):
        return self.manifold_path if self.manifold_path.is_file() else None

    # ---- history.jsonl ---------------------------------------------------------------------------
    def append_history(self, record):
        """Append one epoch's record. A kill during the append can leave a torn last line; read_history drops it."""
        with open(self.path / self.HISTORY, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_history(self, before_epoch=None):
        """The per-epoch records, in order, of epochs < before_epoch (all when None).

        A torn last line (an append cut by a kill) is dropped; a bad line elsewhere is a one-line UserError.
        """
        path = self.path / self.HISTORY
        if not path.is_file():
            return []
        try:
            lines = [line for line in path.read_bytes().decode().splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text; the file is damaged (restore it, or resume the run, which "
                            "rewrites it from its checkpoint)") from None
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                    raise ValueError("no epoch")
                check_fields(record, HISTORY_FIELDS, f"{path}, line {number}")
            except ValueError:
                if number == len(lines):
                    break  # torn by an interrupted append
                raise UserError(f"{path}, line {number}, is not an epoch record; the file is corrupt") from None
            records.append(record)
        return [r for r in records if before_epoch is None or r["epoch"] < before_epoch]

    def restore_history(self, state):
        """history.jsonl as the resumed checkpoint knows it: exactly the records of epochs 1..state["epoch"].

        The checkpoint carries them (the truth on resume: records logged after it are dropped, and a record the
        file lost, e.g. a torn line after the checkpoint was saved, comes back). A checkpoint from before it
        carried them keeps the file's records and must find one per epoch, else the resume refuses in one line.
        """
        epoch, path = state["epoch"], self.path / self.HISTORY
        kept = state.get("history")
        if kept is None:
            kept = self.read_history(epoch + 1)
            if [r["epoch"] for r in kept] != list(range(1, epoch + 1)):
                raise UserError(f"{path} lacks records of epochs 1..{epoch} that the checkpoint has trained, and "
                                "the checkpoint (from an older version) does not carry them; the run cannot be "
                                "resumed with a complete history: restore the file or start a new run")
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    # ---- results ---------------------------------------------------------------------------------
    def write_metrics(self, metrics):
        write_json(self.path / self.METRICS, metrics)

    def read_metrics(self):
        return read_json(self.path / self.METRICS)

    def is_finished(self):
        """A run is finished when its metrics.json belongs to its last epoch: the test phase ran after the last epoch
        history.jsonl records. A run extended by --epochs (or interrupted while testing the extension) keeps the
        earlier test's metrics.json, whose "epochs" is then short of the history's last epoch: not finished."""
        history = self.read_history()
        return bool(history) and self.tested_epoch() == history[-1]["epoch"]

    def tested_epoch(self):
        """The number of epochs the model metrics.json tests had trained (its "epochs"); None without one."""
        metrics = self.read_metrics()
        return None if metrics is None else metrics.get("epochs")

    def write_eval(self, split, result):
        write_json(self.eval_path(split), result)

    def read_eval(self, split):
        return read_json(self.eval_path(split))

    # ---- messages --------------------------------------------------------------------------------
    def resume_hint(self, epoch, script):
        """One line on what an interrupted run kept and a command (its training `script`, a path) that continues
        it from the current folder."""
        if not epoch:
            return f"no epoch finished, nothing to resume; {self} can be deleted"
        script = Path(script)
        try:
            script = script.relative_to(Path.cwd())
        except ValueError:
            pass
        command = shlex.join(["python", str(script), "--resume", str(self)])  # quoted: paths with spaces work
        return f"{self.checkpoint('last')} holds epoch {epoch}; continue with: {command}"
