"""Reading whole runs for the report, the study and the sweep: a run folder's files (through RunDir) checked
against run_schema, so that a damaged or unfinished run is one line naming the file before anything is written.
"""
from pathlib import Path

from dgmkit.errors import UserError
from dgmkit.runs.folder import RunDir
from dgmkit.runs.schema import EVAL_FIELDS, METRICS_FIELDS, NUMBER, check_fields


def load_run(run_dir):
    """Everything the report needs from one run folder, as a dict (history must hold at least one epoch)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"run folder {run} does not exist")
    history = run.read_history()
    if not history:
        raise UserError(f"{run.path / RunDir.HISTORY} is missing or empty: is {run} a run folder of train_torch.py?")
    metrics, evaluation = run.read_metrics() or {}, run.read_eval("test")
    check_fields(metrics, METRICS_FIELDS, run.path / RunDir.METRICS)
    if evaluation is not None:
        check_fields(evaluation, EVAL_FIELDS, run.eval_path("test"))
    return {"dir": run.path, "name": run.name, "history": history, "args": run.read_args() or {},
            "metrics": metrics, "eval": evaluation, "samples": run.samples(), "manifold": run.manifold()}


def load_finished_run(run_dir):
    """load_run of a finished run, with the fields a results table reads checked present (types: load_run);
    an unfinished run, or one whose files lack them, is a one-line UserError before anything is written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if RunDir(run_dir).read_metrics() is None:
        raise UserError(f"{run_dir} has no metrics.json: the run is unfinished (resume it with part1/train_torch.py "
                        "--resume) or not a run folder; nothing was written")
    run = load_run(run_dir)
    # The fields the results block reads (their types were checked by load_run).
    check_fields(run["metrics"], {}, run_dir / RunDir.METRICS, required=(
        "test_bpd", "test_rec_nats", "test_kl_nats", "best_epoch", "epochs", "seconds_per_epoch", "wall_time_s",
        "device"))
    tested, last = run["metrics"]["epochs"], run["history"][-1]["epoch"]
    if tested != last:  # RunDir.is_finished: an extended run keeps its earlier test's metrics.json until retested
        raise UserError(f"{run_dir / RunDir.METRICS} tests the model after epoch {tested}, but history.jsonl goes on "
                        f"to epoch {last}: the run was extended and is unfinished (resume it with part1/train_torch.py "
                        "--resume); nothing was written")
    if run["eval"] is not None:
        where = RunDir(run_dir).eval_path("test")
        check_fields(run["eval"], {}, where, required=(
            "checkpoint", "num_images", "iw_samples", "bpd", "nelbo_nats", "iw_bpd", "iw_nats", "gap_bpd",
            "per_class", "latents", "device", "data_dir", "seed", "wall_time_s", "active_units"))
        for name, entry in run["eval"]["per_class"].items():
            entry = entry if isinstance(entry, dict) else {}
            check_fields(entry, {"count": int, **{k: NUMBER for k in (
                "bpd", "bpd_se", "iw_bpd", "iw_bpd_se")}}, f"{where}, per_class {name!r}", required=("count",))
        check_fields(run["eval"]["latents"], {"z_dim": int, "active_threshold": NUMBER, "kl_per_dim": list},
                     f"{where}, latents", required=("z_dim", "active_threshold"))
    return run
