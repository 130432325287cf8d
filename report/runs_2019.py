"""The runs of the report's section "The 2019 models" (vae_gan_realnvp.py), found in their folders, told apart by
their settings and checked before anything is drawn: each run's args.json (which tells its family and data), the
fields its family's part of the section reads (NEEDS: present and of their type, one line naming the file and
field), and, for the comparison and the timing, that the runs share dataset and bits (run_data.same_data).
"""
from pathlib import Path

import torch

from dgmkit.cli.runner import one_line
from dgmkit.errors import UserError
from dgmkit.runs.finished import load_run
from dgmkit.runs.folder import RunDir
from dgmkit.runs.schema import NUMBER, check_fields
from dgmkit.vae.model import VAE
from run_data import data_key, family, same_data

ROLES = ("vae", "vae_z2", "gan", "realnvp")  # the runs of the section, told apart by their settings
GAN_CURVES = ("train_d_loss", "train_g_loss", "train_d_real", "train_d_fake")
# What the section reads of a run beyond load_run's own checks, by the run's part in it: (file, required fields,
# {field: type}); every part also reads NEEDS["all"], the GAN's history every line.
NEEDS = {
    "all": [("metrics", ("epochs", "seconds_per_epoch", "wall_time_s"), {})],
    "vae": [("args", ("z_dim",), {"z_dim": int}), ("metrics", ("test_bpd",), {})],
    "vae_z2": [("args", ("z_dim",), {"z_dim": int}), ("metrics", ("test_bpd",), {})],
    "gan": [("metrics", (), {"final_d_real": NUMBER, "final_d_fake": NUMBER, "interpolation_labels": list}),
            ("history", GAN_CURVES, dict.fromkeys(GAN_CURVES, NUMBER))],
    "realnvp": [("metrics", ("test_bpd", "test_bpd_se"), {"test_bpd_se": NUMBER, "draws": int})],
    "compare_realnvp": [("args", ("seed",), {"seed": int}), ("metrics", ("test_bpd", "test_bpd_se", "parameters"),
                                                          {"test_bpd_se": NUMBER, "parameters": int})],
    "compare_vae": [("args", ("seed", "z_dim", "num_filters"), {"seed": int, "z_dim": int, "num_filters": int}),
                    ("eval", ("iw_bpd", "iw_bpd_se", "iw_samples"), {})],
    "timing": [],
}


def role(args):
    """Which of ROLES a run's settings (args.json) make it: its family's own settings tell."""
    kind = family(args)
    return kind if kind != "vae" else "vae_z2" if args.get("z_dim") == 2 else "vae"


def check_needs(run, part):
    """A one-line UserError naming the file and the field unless `run` holds what its `part` (a key of NEEDS)
    of the section reads."""
    folder = RunDir(run["dir"])
    where = {"args": folder.path / RunDir.ARGS, "metrics": folder.path / RunDir.METRICS,
             "eval": folder.eval_path("test")}
    for record, required, types in NEEDS["all"] + NEEDS[part]:
        if record == "history":
            for number, line in enumerate(run["history"], start=1):
                check_fields(line, types, f"{one_line(folder.path / RunDir.HISTORY)}, line {number}", required)
        else:
            check_fields(run[record] or {}, types, one_line(where[record]), required)


def finished_runs(folder):
    """load_run of every finished run folder directly in `folder`, in name order; a run without its args.json
    (which tells its family and data) is a one-line UserError."""
    folders = sorted(p for p in Path(folder).iterdir() if p.is_dir() and RunDir(p).is_finished())
    for path in folders:
        if not (path / RunDir.ARGS).is_file():
            raise UserError(f"{one_line(path / RunDir.ARGS)} is missing: a run's settings tell its family (VAE, GAN or "
                            f"RealNVP) and its data; restore the file, or move the folder out of {one_line(folder)}")
    return [load_run(p) for p in folders]


def load_models(folder):
    """{role: run} of the section's four runs in `folder` (one each); a missing one is a one-line UserError."""
    found = {}
    for run in finished_runs(folder):
        found.setdefault(role(run["args"]), run)
    missing = [name for name in ROLES if name not in found]
    if missing:
        raise UserError(f"--models_2019 {folder}: no finished run for {', '.join(missing)} (binary-MNIST VAE with "
                        "z_dim 20 and 2, train_gan.py, train_realnvp.py)")
    for name, run in found.items():
        check_needs(run, name)
        data_key(run)
    if found["vae_z2"]["manifold"] is None:
        raise UserError(f"{one_line(RunDir(found['vae_z2']['dir']).manifold_path)} is missing: the z_dim 2 VAE's "
                        "manifold is one of the section's figures (training writes it after the test phase)")
    return found


def load_comparison(realnvp_folder, vae_folder):
    """{seed: (realnvp run, vae run)}: RealNVP runs and the VAE's ELBO runs (K = 1, no flow) of the same seed, all
    on the same data (else a one-line UserError)."""
    flows = [r for r in finished_runs(realnvp_folder) if role(r["args"]) == "realnvp"]
    vaes = [r for r in finished_runs(vae_folder) if role(r["args"]) == "vae" and
            r["args"].get("objective", "elbo") == "elbo" and r["args"].get("train_samples", 1) == 1 and
            r["args"].get("flow", "none") == "none" and r["eval"] is not None]
    for part, runs in (("compare_realnvp", flows), ("compare_vae", vaes)):
        for run in runs:
            check_needs(run, part)
    flows, vaes = ({r["args"]["seed"]: r for r in runs} for runs in (flows, vaes))
    pairs = {seed: (flows[seed], vaes[seed]) for seed in sorted(set(flows) & set(vaes))}
    if len(pairs) < 2:
        raise UserError(f"--compare {realnvp_folder} {vae_folder}: {len(pairs)} seed(s) with both a finished "
                        "RealNVP run and a VAE ELBO run with eval_test.json; a seed-level interval needs 2 or more")
    same_data([run for pair in pairs.values() for run in pair], f"--compare {realnvp_folder} {vae_folder}")
    return pairs


def load_timing(realnvp_folder):
    """{"vae": run, "realnvp": run} of REALNVP_DIR/timing/ (short runs of both, one after the other on one
    machine: the side-by-side seconds per epoch), or None when that folder is absent."""
    folder = Path(realnvp_folder) / "timing"
    if not folder.is_dir():
        return None
    found = {role(r["args"]): r for r in finished_runs(folder)}
    if not {"vae", "realnvp"} <= found.keys():
        raise UserError(f"{folder}: needs one finished VAE run and one RealNVP run (the side-by-side timing)")
    timing = {"vae": found["vae"], "realnvp": found["realnvp"]}
    for run in timing.values():
        check_needs(run, "timing")
    same_data(timing.values(), f"{folder} (the side-by-side timing)")
    return timing


def size(run):
    """A run's parameter count: RealNVP's metrics.json records it; the VAE's is counted from its args.json's
    settings (an ELBO run without a flow; on the meta device, so nothing is allocated)."""
    if role(run["args"]) == "realnvp":
        return run["metrics"]["parameters"]
    with torch.device("meta"):
        model = VAE(run["args"]["num_filters"], run["args"]["z_dim"], 0.0, levels=2 ** data_key(run)[1])
    return sum(p.numel() for p in model.parameters())
