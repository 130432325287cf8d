"""The run folder: the one place that knows its layout and file formats (the README's schema).

    <log_dir>/<date>_<time>_z<z_dim>/      (or --run_name)
        args.json               the run's settings (updated on resume), plus what `auto` chose
        history.jsonl           one JSON object per epoch: epoch, seconds, {train,val}_{bpd,rec_nats,kl_nats},
                                train_objective_bpd
        metrics.json            the test results of the best-by-validation model
        eval_<split>.json       evaluate.py's results
        samples_epoch_XXX.png   sample grids; vae_manifold.png (z_dim 2)
        checkpoints/{best,last}.pt
        events.out.tfevents.*   TensorBoard

Every file goes through checkpoints' atomic writes. Names: `bpd` is the negative ELBO in bits per
dimension, `rec_nats` -log p(x|z) and `kl_nats` the KL term in nats per image (bpd = (rec_nats +
kl_nats) log2(e) / 784), `iw_bpd` the negative importance-weighted bound; `_se` a standard error
over images. Every quantity is a loss: lower is better.
"""
import contextlib
import fcntl
import json
import os
import re
import shlex
from datetime import datetime
from pathlib import Path

from atomic_io import write_json, write_text
from checkpoints import FAMILY, check_model_fits, load_checkpoint
from cli_common import UserError, first_line, resolve_path
from config import PART1_DIR, TRAIN_SCRIPT, args_to_dict, check_saved_settings, defaults
from run_schema import EVAL_FIELDS, HISTORY_FIELDS, METRICS_FIELDS, NUMBER, check_fields

REPO_ROOT = PART1_DIR.parent
ARGS, HISTORY, METRICS = "args.json", "history.jsonl", "metrics.json"
# Flags a resumed run may change; every other setting comes from the run being resumed.
RESUME_MAY_CHANGE = ("epochs", "device", "num_workers", "eval_batch_size", "final_iw_samples", "progress_bar",
                     "data_dir", "compile", "sample_epochs")


def make_run_dir(log_dir, z_dim, name=None):
    """Create a fresh run folder (with checkpoints/) under `log_dir`; never reuses an existing one."""
    stamp = name or f"{datetime.now():%Y-%m-%d_%H-%M-%S}_z{z_dim}"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1 if name else 1000):
            run_dir = log_dir / (stamp if attempt == 0 else f"{stamp}_{attempt}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            (run_dir / "checkpoints").mkdir()
            return run_dir
    except OSError as error:
        raise UserError(f"cannot create a run folder in --log_dir {log_dir}: {error.strerror}; "
                        "choose a writable folder") from None
    raise UserError(f"--log_dir {log_dir} already holds a run named {stamp}; resume it with --resume or "
                    "choose another --run_name")


LOCK = ".lock"


@contextlib.contextmanager
def locked(run_dir):
    """Hold the run folder's lock for the block: a second process that wants to write into the same run (a
    training, a resume, an evaluation) gets a one-line UserError instead of interleaving its files. An
    advisory flock on run_dir/.lock (opened without following a link), released when the process ends,
    even by SIGKILL; the file is removed on the way out."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise UserError(f"cannot lock the run folder {run_dir} ({path}: {error.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UserError(f"the run folder {run_dir} is in use by another process (a training, resume or evaluation); "
                        "wait for it to finish or stop it, then retry") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def write_args(run_dir, args_dict):
    write_json(Path(run_dir) / ARGS, args_dict)


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


# ---- history.jsonl --------------------------------------------------------------------------------

def append_history(run_dir, record):
    """Append one epoch's record. A kill during the append can leave a torn last line; read_history drops it."""
    with open(Path(run_dir) / HISTORY, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_history(run_dir, before_epoch=None):
    """The per-epoch records, in order, of epochs < before_epoch (all when None).

    A torn last line (an append cut by a kill) is dropped; a bad line elsewhere is a one-line UserError.
    """
    path = Path(run_dir) / HISTORY
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


def restore_history(run_dir, state):
    """history.jsonl as the resumed checkpoint knows it: exactly the records of epochs 1..state["epoch"].

    The checkpoint carries them (the truth on resume: records logged after it are dropped, and a record the
    file lost, e.g. a torn line after the checkpoint was saved, comes back). A checkpoint from before it
    carried them keeps the file's records and must find one per epoch, else the resume refuses in one line.
    """
    epoch, path = state["epoch"], Path(run_dir) / HISTORY
    kept = state.get("history")
    if kept is None:
        kept = read_history(run_dir, epoch + 1)
        if [r["epoch"] for r in kept] != list(range(1, epoch + 1)):
            raise UserError(f"{path} lacks records of epochs 1..{epoch} that the checkpoint has trained, and the "
                            "checkpoint (from an older version) does not carry them; the run cannot be resumed "
                            "with a complete history: restore the file or start a new run")
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


# ---- results --------------------------------------------------------------------------------------

def write_metrics(run_dir, metrics):
    write_json(Path(run_dir) / METRICS, metrics)


def read_metrics(run_dir):
    return read_json(Path(run_dir) / METRICS)


def eval_path(run_dir, split):
    return Path(run_dir) / f"eval_{split}.json"


def write_eval(run_dir, split, result):
    write_json(eval_path(run_dir, split), result)


# ---- resuming -------------------------------------------------------------------------------------

def resumed_args(args):
    """The settings of the run in args.resume, with the flags a resume may change taken from `args`.

    A flag the user typed (args.given; without it, any value other than the default) that
    contradicts the run is a one-line UserError: a resumed run must compute exactly what the
    uninterrupted run would have. Returns (merged settings dict, checkpoint state).
    """
    path = Path(args.resume) / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"--resume {args.resume}: no checkpoint at {path}; pass a run folder of train_torch.py "
                        "that finished at least one epoch")
    state = load_checkpoint(path, for_resume=True)
    check_saved_settings(state["args"], f"{path}, args")
    saved, new, default = state["args"], args_to_dict(args), defaults()
    given = set(getattr(args, "given", [k for k in new if new[k] != default.get(k)])) - {"resume"}
    check_model_fits(state, path, {k: new[k] if k in given else saved.get(k, default[k]) for k in FAMILY})
    merged = {**default, **saved, "resume": new["resume"]}
    for name in sorted(given):
        if new[name] == merged.get(name):
            continue
        if name not in RESUME_MAY_CHANGE:
            raise UserError(f"--{name} {new[name]} differs from the resumed run's {merged.get(name)}; a resumed run "
                            f"keeps its settings (only --{', --'.join(RESUME_MAY_CHANGE)} may change)")
        merged[name] = new[name]
    if "data_dir" in given:
        merged["data_dir"] = str(resolve_path(new["data_dir"], "--data_dir"))
    return merged, state


def resume_hint(run_dir, epoch):
    """One line on what an interrupted run kept and a command that continues it from the current folder."""
    if run_dir is None:
        return "no run folder was created; nothing was written"
    if not epoch:
        return f"no epoch finished, nothing to resume; {run_dir} can be deleted"
    script = TRAIN_SCRIPT
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    command = shlex.join(["python", str(script), "--resume", str(run_dir)])  # quoted: paths with spaces work
    return f"{run_dir / 'checkpoints' / 'last.pt'} holds epoch {epoch}; continue with: {command}"


def find_data_dir(data_dir):
    """A run's data_dir; a relative one (older runs stored it as typed) is looked up from here, the repo
    root, then part1/."""
    data_dir = Path(data_dir)
    if data_dir.is_absolute():
        return data_dir
    for base in (Path.cwd(), REPO_ROOT, PART1_DIR):
        if (base / data_dir / "FashionMNIST" / "raw").is_dir():
            return (base / data_dir).resolve()
    return data_dir


# ---- reading a run (the report, the sweep) ----------------------------------------------------------

def is_finished(run_dir):
    """A run is finished when it wrote metrics.json (after its test phase)."""
    return (Path(run_dir) / METRICS).is_file()


def load_run(run_dir):
    """Everything the report needs from one run folder, as a dict (history must hold at least one epoch)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    history = read_history(run_dir)
    if not history:
        raise UserError(f"{run_dir / HISTORY} is missing or empty: is {run_dir} a run folder of train_torch.py?")
    samples = {int(m.group(1)): p for p in run_dir.glob("samples_epoch_*.png")
               if (m := re.fullmatch(r"samples_epoch_(\d+)\.png", p.name)) and p.is_file()}
    manifold = run_dir / "vae_manifold.png"
    metrics, evaluation = read_metrics(run_dir) or {}, read_json(eval_path(run_dir, "test"))
    check_fields(metrics, METRICS_FIELDS, run_dir / METRICS)
    if evaluation is not None:
        check_fields(evaluation, EVAL_FIELDS, eval_path(run_dir, "test"))
    return {"dir": run_dir, "name": run_dir.resolve().name, "history": history,
            "args": read_json(run_dir / ARGS) or {}, "metrics": metrics, "eval": evaluation,
            "samples": dict(sorted(samples.items())), "manifold": manifold if manifold.is_file() else None}


def load_finished_run(run_dir):
    """load_run of a finished run, with the fields a results table reads checked present (types: load_run);
    an unfinished run, or one whose files lack them, is a one-line UserError before anything is written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if not is_finished(run_dir):
        raise UserError(f"{run_dir} has no metrics.json: the run is unfinished (resume it with part1/train_torch.py "
                        "--resume) or not a run folder; nothing was written")
    run = load_run(run_dir)
    # The fields the results block reads (their types were checked by load_run).
    check_fields(run["metrics"], {}, run_dir / METRICS, required=(
        "test_bpd", "test_rec_nats", "test_kl_nats", "best_epoch", "epochs", "seconds_per_epoch", "wall_time_s",
        "device"))
    if run["eval"] is not None:
        check_fields(run["eval"], {}, eval_path(run_dir, "test"), required=(
            "checkpoint", "num_images", "iw_samples", "bpd", "nelbo_nats", "iw_bpd", "iw_nats", "gap_bpd",
            "per_class", "latents", "device", "data_dir", "seed", "wall_time_s", "active_units"))
        where = eval_path(run_dir, "test")
        for name, entry in run["eval"]["per_class"].items():
            entry = entry if isinstance(entry, dict) else {}
            check_fields(entry, {"count": int, **{k: NUMBER for k in (
                "bpd", "bpd_se", "iw_bpd", "iw_bpd_se")}}, f"{where}, per_class {name!r}", required=("count",))
        check_fields(run["eval"]["latents"], {"z_dim": int, "active_threshold": NUMBER, "kl_per_dim": list},
                     f"{where}, latents", required=("z_dim", "active_threshold"))
    return run
