"""Train a grid of VAEs (objective x K x flow x flow length x seed), or seeds of RealNVP or the GAN (--family),
one resumable run folder per point.

    python part1/sweep.py SWEEP_DIR [grid flags] [--only INDEX] [--slurm ...] -- [flags of train_torch.py]
    python part1/sweep.py runs/k --objectives elbo iwae --train_samples 1 5 -- --data_dir ../shared/data --epochs 80

Flags after `--` go to every run unchanged (not the grid's own: --objective, --train_samples, --flow, --flow_length,
--seed, --log_dir, --run_name, --resume). Each point is SWEEP_DIR/<objective>-k<K>_<flow>-l<L>_s<seed> (flow none:
L 0; other families: <family>_s<seed>), run as a child process `python part1/train_torch.py` (train_realnvp.py,
train_gan.py); a rerun skips finished runs (metrics.json), resumes interrupted ones (checkpoints/last.pt) and
restarts those killed before their first checkpoint, removing a folder only under its lock (a point another process
runs stops the sweep in one line, untouched). Runs carry the sweep's flags: a run with other settings than the flags
after `--` give it is refused in one line before anything runs (use a new SWEEP_DIR), but for the flags a resume may
change (session.RESUME_MAY_CHANGE), passed on to resumed runs; a typed --epochs above a finished run's extends it,
one below is refused. SWEEP_DIR/sweep.json: the grid, the passthrough, each point's state. --slurm writes
SWEEP_DIR/sweep.sbatch, a job array whose task i runs this script with --only i, and runs nothing. Exit statuses as
train_torch.py's; a failed run stops the sweep with its status; SIGINT/SIGTERM are forwarded to the running child.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line 
    from dgmkit.cli import startup
    startup.guard_startup()

import argparse
import contextlib
import io
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dgmkit.cli.args import ArgumentParser, int_at_least, resolve_path, seed_type
from dgmkit.cli.runner import run_cli
from dgmkit.engine.session import RESUME_MAY_CHANGE
from dgmkit.errors import EXIT_SIGINT, Interrupted, Terminated, UserError, signal_name_and_status
from dgmkit.gan.config import GANConfig
from dgmkit.places import PART1_DIR, REPO_ROOT
from dgmkit.realnvp.config import RealNVPConfig
from dgmkit.runs.atomic_io import write_json, write_text
from dgmkit.runs.folder import RunDir, read_json
from dgmkit.vae.bounds import OBJECTIVES
from dgmkit.vae.config import TrainConfig
from dgmkit.vae.model import FLOW_KINDS

PROG, SWEEP_JSON, SBATCH = "sweep.py", "sweep.json", "sweep.sbatch"
GRID_FLAGS = ("objectives", "train_samples", "flows", "flow_lengths", "seeds")
FAMILIES = {"vae": TrainConfig, "realnvp": RealNVPConfig, "gan": GANConfig}  # each config knows its SCRIPT
GRID_OWNS = ("objective", "train_samples", "flow", "flow_length", "seed", "log_dir", "run_name", "resume")
USAGE = "%(prog)s SWEEP_DIR [grid flags] [--only INDEX] [--slurm [slurm flags]] [-- training flags]"


class RunFailed(Interrupted):
    """A run exited non-zero: one line (run_cli prints it as it prints Interrupted), the run's exit status."""


def build_parser():
    parser = ArgumentParser(prog=PROG, usage=USAGE, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="flags after -- are train_torch.py's (python part1/train_torch.py -h)")
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR",
                        help="folder of the sweep: one run folder per grid point, sweep.json, sweep.sbatch")
    grid = parser.add_argument_group("grid (every combination is one run)")
    grid.add_argument("--family", choices=list(FAMILIES), default="vae",
                      help="the model: the VAE (the whole grid), or RealNVP or the GAN (--seeds only)")
    grid.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=["elbo"], help="training objectives")
    grid.add_argument("--train_samples", nargs="+", type=int_at_least(1), default=[1], metavar="K", help="K values")
    grid.add_argument("--flows", nargs="+", choices=FLOW_KINDS, default=["none"], help="posterior flows")
    grid.add_argument("--flow_lengths", nargs="+", type=int_at_least(1), default=[10], metavar="L",
                      help="flow layers, for flows other than none (none always has 0)")
    grid.add_argument("--seeds", nargs="+", type=seed_type, default=[42], metavar="S", help="seeds")
    grid.add_argument("--only", type=int_at_least(0), default=None, metavar="INDEX",
                      help="run only this point (0-based, in sweep.json's order): what a SLURM array task does")
    slurm = parser.add_argument_group("SLURM (with --slurm: write SWEEP_DIR/sweep.sbatch, run nothing)")
    slurm.add_argument("--slurm", action="store_true", help="write a job array script (one task per point)")
    slurm.add_argument("--partition", default="gpu", help="partition of the array tasks")
    slurm.add_argument("--time", default="02:00:00", help="wall-clock limit of each task (a rerun resumes)")
    slurm.add_argument("--gpus", type=int_at_least(0), default=1, help="GPUs per task (0: no --gres line)")
    slurm.add_argument("--cpus_per_task", type=int_at_least(1), default=4, help="CPU cores per task")
    slurm.add_argument("--job_name", default="vae-sweep", help="the job's name in squeue")
    slurm.add_argument("--activate", default="source .venv/bin/activate", help="environment activation line")
    return parser


def parse_args(argv=None):
    """The sweep's namespace; `passthrough` holds the flags after the first `--` (unchecked)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    split = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    args.passthrough = argv[split + 1:]
    return args


def check_passthrough(passthrough, family="vae"):
    """The family's config of the flags after `--`; a bad flag or one the grid owns is a one-line UserError."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            train = FAMILIES[family].parse(passthrough, FAMILIES[family].SCRIPT.name)
    except SystemExit as stop:
        if stop.code == 0:  # -- --help
            print(captured.getvalue(), end="")
            raise
        lines = [line for line in captured.getvalue().splitlines() if line.strip()] or ["invalid"]
        raise UserError(f"training flags after --: {lines[-1].split(': error: ', 1)[-1]}") from None
    owned = [f"--{name}" for name in GRID_OWNS if name in train.given]
    if owned:
        raise UserError(f"{' '.join(owned)} after -- is set by the sweep for each run (grid flags --"
                        f"{', --'.join(GRID_FLAGS)}; folders in SWEEP_DIR): remove it")
    return train


def grid_points(args):
    """The grid's points in a stable order (objectives outermost, seeds innermost), as dicts {objective,
    train_samples, flow, flow_length, seed}; flow none gets flow_length 0 and repeated points are dropped. Other
    families: {seed} only (a VAE grid flag other than its default is a one-line UserError)."""
    if args.family != "vae":
        vae_flags = [f"--{name}" for name in GRID_FLAGS[:-1] if getattr(args, name) != build_parser().get_default(name)]
        if vae_flags:
            raise UserError(f"{' '.join(vae_flags)}: the VAE's grid; --family {args.family} sweeps --seeds only")
        return [{"seed": seed} for seed in dict.fromkeys(args.seeds)]  # repeated seeds dropped, order kept
    points = [{"objective": o, "train_samples": k, "flow": f, "flow_length": length * (f != "none"), "seed": s}
              for o, k, f, length, s in itertools.product(*(getattr(args, name) for name in GRID_FLAGS))]
    return [point for i, point in enumerate(points) if point not in points[:i]]


def point_name(point, family="vae"):
    """The run folder's name of a point, e.g. elbo-k1_none-l0_s42 or iwae-k5_planar-l10_s43; realnvp_s42."""
    if family != "vae":
        return f"{family}_s{point['seed']}"
    return "{objective}-k{train_samples}_{flow}-l{flow_length}_s{seed}".format(**point)


def point_state(run_dir, epochs=None):
    """finished, interrupted (checkpoints/last.pt) or pending (no checkpoint or no folder); a finished run tested
    after fewer epochs than a typed --epochs (`epochs`) is interrupted: resumed to train further."""
    run = RunDir(run_dir)
    if run.is_finished() and (epochs is None or epochs <= run.tested_epoch()):
        return "finished"
    return "interrupted" if run.has_checkpoint("last") else "pending"


def check_kept_settings(points, chosen, sweep_dir, train, family):
    """Before anything runs or is written: a chosen point's run, unless pending, must have the settings (args.json) the
    sweep's flags give it, but those a resume may change, and no more epochs than a typed --epochs; else one line."""
    defaults, new = FAMILIES[family].defaults(), train.to_dict()
    may_change = ", --".join(name for name in RESUME_MAY_CHANGE if name in defaults)  # the family's own flags
    runs = [RunDir(sweep_dir / point_name(points[index], family)) for index in chosen]
    for run in (run for run in runs if point_state(run.path) != "pending"):  # a pending point starts afresh
        old = {**defaults, **(run.read_args() or new)}  # no args.json: the resume checks the checkpoint's
        for name in (n for n in defaults if n not in (*RESUME_MAY_CHANGE, *GRID_OWNS) and old[n] != new[n]):
            raise UserError(f"--{name}: {run} was trained with {old[name]}, the flags after -- give {new[name]}"
                            f"{'' if name in train.given else ' (the default)'}; a sweep's runs keep their settings (a "
                            f"rerun may change only --{may_change}): rerun with the flags they ran with, or use a "
                            "new SWEEP_DIR")
        if "epochs" in train.given and run.is_finished() and train.epochs < (done := run.tested_epoch()):
            raise UserError(f"--epochs {train.epochs}: {run} finished {done} epochs and cannot be shortened; pass "
                            f"--epochs {done} or more, or use a new SWEEP_DIR")


def relay(pipe, write, held):
    """Forward a child's stderr through `write` as it comes (progress bars included), holding back only a complete
    last line: what a failed run says, which the sweep folds into its own one line. held[0]: that line."""
    while chunk := os.read(pipe.fileno(), 65536):
        data = held[0] + chunk
        cut = data.rfind(b"\n", 0, len(data) - 1) + 1  # the start of the last line, complete or not
        cut = max(cut, data.rfind(b"\r") + 1)  # a progress bar's redraws (\r) go out at once
        write(data[:cut])
        sys.stderr.flush()
        held[0] = data[cut:]


def run_child(command, name):
    """(exit status, the last line the child wrote to stderr) of one training; a signal to the sweep is
    forwarded to it (in its own session, so that a terminal's Ctrl-C reaches it once) and stops the sweep with
    the signal's status."""
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
    held = [b""]
    sys.stderr.flush()  # what the sweep said before comes first
    binary = getattr(sys.stderr, "buffer", None)  # none in a test's capture: text
    write = binary.write if binary else lambda data: sys.stderr.write(data.decode(errors="replace"))
    relaying = threading.Thread(target=relay, args=(process.stderr, write, held), daemon=True)
    relaying.start()
    try:
        status = process.wait()
    except (KeyboardInterrupt, Terminated) as stop:
        signame, status = signal_name_and_status(stop)
        process.send_signal(signal.SIGINT if status == EXIT_SIGINT else signal.SIGTERM)
        process.wait()
        relaying.join()
        raise Interrupted(f"stopped by {signame} during {name}; rerun the same command to resume it", status) from None
    relaying.join()
    last = held[0].decode(errors="replace").strip()
    if status == 0 and last:
        print(last, file=sys.stderr, flush=True)
    return status, last


def run_point(index, points, sweep_dir, args, train):
    """Skip, resume or start one point; returns what was done: skip, resume or start. A folder is looked at
    again, and removed, only under its lock: one that another process holds is a one-line UserError."""
    point, name = points[index], point_name(points[index], args.family)
    run_dir, epochs, note, command = sweep_dir / name, train.epochs if "epochs" in train.given else None, "", None
    with contextlib.ExitStack() as hold:
        if run_dir.is_dir() and point_state(run_dir, epochs) != "finished":
            try:
                hold.enter_context(RunDir(run_dir).locked())
            except UserError as error:
                raise UserError(f"cannot run point {name}: {error}; the sweep stopped, its folder untouched") from None
        state = point_state(run_dir, epochs)
        if state == "interrupted":
            command = ["--resume", str(run_dir), *args.passthrough]  # check_kept_settings: only resumable ones differ
        elif state == "pending":
            command = [*(part for key, value in point.items() for part in (f"--{key}", str(value))),
                       "--log_dir", str(sweep_dir), "--run_name", name, *args.passthrough]
            if run_dir.is_dir():  # killed before its first checkpoint: nothing to keep (removed while locked)
                shutil.rmtree(run_dir)
                note = " (removed its folder: no checkpoint)"
    action = {"finished": "skip", "interrupted": "resume", "pending": "start"}[state]
    print(f"[{index + 1}/{len(points)}] {name}: {action}{' (finished)' * (state == 'finished') or note}", flush=True)
    if command is not None:
        status, said = run_child([sys.executable, str(FAMILIES[args.family].SCRIPT), *command], name)
        if status != 0:
            how = f"status {status}" if status > 0 else f"signal {-status}"
            said = f": {said}" if said else ""
            raise RunFailed(f"error: run {name} failed ({how}){said}; the sweep stopped (rerun it to retry)",
                            status if status > 0 else 128 - status)
    return action


def write_summary(sweep_dir, args, points):
    """sweep.json: the grid, the passthrough and each point's state; rewritten only when it changed."""
    record = {"grid": {name: getattr(args, name) for name in ("family", *GRID_FLAGS)}, "passthrough": args.passthrough,
              "points": [{"index": i, "name": point_name(p, args.family), **p,
                          "status": point_state(sweep_dir / point_name(p, args.family))}
                         for i, p in enumerate(points)]}
    path = sweep_dir / SWEEP_JSON
    with contextlib.suppress(UserError):  # a corrupt sweep.json is rewritten
        if read_json(path) == record:
            return path
    write_json(path, record)
    return path


def sbatch_text(args, points, sweep_dir):
    """The job array script: one task per point, each `sweep.py SWEEP_DIR --only i <grid> -- <passthrough>`."""
    grid = ["--family", args.family,
            *(part for name in GRID_FLAGS for part in (f"--{name}", *map(str, getattr(args, name))))]
    tail = ["--", *args.passthrough] if args.passthrough else []
    commands = [shlex.join(["python", str(PART1_DIR / "sweep.py"), str(sweep_dir), "--only", str(i), *grid, *tail])
                for i in range(len(points))]
    directives = [("one array task per grid point (task i runs point i of sweep.json)", f"array=0-{len(points) - 1}"),
                  ("the job's name in squeue", f"job-name={args.job_name}"),
                  ("the partition (queue)", f"partition={args.partition}"),
                  ("wall-clock limit of each task", f"time={args.time}"),
                  *([("GPUs per task", f"gres=gpu:{args.gpus}")] if args.gpus else []),
                  ("CPU cores per task", f"cpus-per-task={args.cpus_per_task}"),
                  ("each task's log (%A: the job, %a: the task)", f"output={sweep_dir}/slurm-%A_%a.out")]
    return "\n".join([
        "#!/bin/bash",
        f"# {len(points)} runs of the sweep {sweep_dir}; a task skips a finished run and resumes an interrupted one",
        *(f"# {comment}\n#SBATCH --{directive}" for comment, directive in directives),
        "set -eo pipefail",
        ': "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}"',
        "# the repository root, then the Python environment",
        f"cd {shlex.quote(str(REPO_ROOT))}",
        args.activate,
        f"cd {shlex.quote(str(Path.cwd()))}  # where sweep.py --slurm ran: relative paths in the flags hold",
        "# one complete command per grid point",
        "COMMANDS=(", *(f"  {shlex.quote(command)}" for command in commands), ")",
        'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"', ""])


def main(args):
    """Run (or, with --slurm, write the job array of) every point of the grid; returns the actions taken."""
    train = check_passthrough(args.passthrough, args.family)
    points = grid_points(args)
    if args.only is not None and args.only >= len(points):
        raise UserError(f"--only {args.only}: the grid has {len(points)} points (0 .. {len(points) - 1})")
    sweep_dir = resolve_path(args.sweep_dir, "SWEEP_DIR")
    if args.slurm and args.only is not None:
        raise UserError("--only is what each array task runs; leave it out with --slurm")
    chosen = range(len(points)) if args.only is None else [args.only]
    check_kept_settings(points, chosen, sweep_dir, train, args.family)
    if args.slurm and any(not t or any(c.isspace() for c in t) for t in (str(sweep_dir), args.job_name,
                                                                          args.partition, args.time)):
        raise UserError("SWEEP_DIR, --job_name, --partition and --time go into #SBATCH lines: no spaces there")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create SWEEP_DIR {sweep_dir}: {error.strerror}") from None
    if args.slurm:
        path = sweep_dir / SBATCH
        write_text(path, sbatch_text(args, points, sweep_dir))
        print(f"{path}: {len(points)} array tasks; submit with: sbatch {path}")
        return []
    start, actions = time.time(), []
    try:
        for index in chosen:
            actions.append(run_point(index, points, sweep_dir, args, train))
    except (KeyboardInterrupt, Terminated) as stop:  # between two runs
        signame, status = signal_name_and_status(stop)
        raise Interrupted(f"stopped by {signame}; rerun the same command to continue", status) from None
    finally:
        path = write_summary(sweep_dir, args, points)
    print(f"sweep: {len(actions)} point(s) finished ({actions.count('start')} started, {actions.count('resume')} "
          f"resumed, {actions.count('skip')} skipped as finished) | wall time {time.time() - start:.0f} s | {path}")
    return actions


def cli(argv=None):
    """Parse arguments and sweep; every expected failure is one line on stderr and train_torch's exit status."""
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
