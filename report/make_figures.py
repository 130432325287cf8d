"""Make the report's figures and results tables from run folders written by part1/train_torch.py.

    python report/make_figures.py RUN_DIR [RUN_DIR_Z2] [--study SWEEP_DIR]
                                  [--models_2019 DIR --compare REALNVP_DIR VAE_DIR]

RUN_DIR is the main run (z_dim 20 in the report): its bpd curves and sample grids become
figures/bpd_curves.png and figures/samples.png, its evaluate.py pictures figures/reconstructions.png
and figures/interpolations.png. RUN_DIR_Z2 is a z_dim 2 run: its vae_manifold.png becomes
figures/manifold.png. Both runs go into figures/results.md, and the same Markdown replaces the text
between the results markers of report.md, so no number in the report is typed by hand. --study and
--models_2019 write the study (2.11) and "The 2019 models" (Part 3) between their own markers. Run
folders are read through part1/dgmkit/runs/finished.py and dgmkit/runs/folder.py (the one owner of
their format); unfinished runs are refused before anything is written. Ctrl-C or SIGTERM stops it with one line
that lists the files written (and removed) before the stop, exit status 130 or 143 (blocks.py keeps that list).

One module per section: results_2021.py (RUN_DIR, RUN_DIR_Z2), study.py (--study), vae_gan_realnvp.py
(--models_2019, --compare); this file parses the flags and runs the sections given, in that order.
"""
from pathlib import Path

try:  # part1/'s modules: importable once it is installed (requirements.txt: -e ./part1; pytest: pythonpath)
    from dgmkit.cli import startup
except ModuleNotFoundError:
    raise SystemExit("make_figures.py: error: part1/'s modules are not importable; install them with "
                     "`pip install -e ./part1` in the repository root (`make` does), then retry") from None
if __name__ == "__main__":  # before numpy, matplotlib and torch: a signal while they import ends in one line
    startup.guard_startup()

import blocks  # noqa: E402
import results_2021  # noqa: E402
import study  # noqa: E402
import vae_gan_realnvp  # noqa: E402
from blocks import PROG  # noqa: E402
from dgmkit.cli.args import ArgumentParser, resolve_path  # noqa: E402
from dgmkit.cli.runner import run_cli  # noqa: E402
from dgmkit.errors import Interrupted, Terminated, UserError, signal_name_and_status  # noqa: E402
from dgmkit.runs.atomic_io import check_writable  # noqa: E402

REPORT_DIR = Path(__file__).resolve().parent


def main(args):
    """Write the figures and results.md (and, with --study, the study; with --models_2019, "The 2019 models") into
    args.out_dir and update args.report; returns the written paths. Every input is checked before anything is
    written; a signal stops it with one line listing what was written before the stop (blocks.DONE)."""
    blocks.DONE.clear()
    try:
        written = make(args)
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        raise Interrupted(f"stopped by {name}; {blocks.done_text(args.report)}", status) from None
    for action, path in blocks.DONE:
        print(f"{action} {path}")
    return written


def make(args):
    if args.run_dir is None and args.study is None and args.models_2019 is None:
        raise UserError("give a RUN_DIR, a --study SWEEP_DIR, --models_2019 DIR --compare DIR DIR, or several")
    if (args.models_2019 is None) != (args.compare is None):
        raise UserError("--models_2019 and --compare go together (the section holds both)")
    args.out_dir, args.report = resolve_path(args.out_dir, "--out_dir"), resolve_path(args.report, "--report")
    check_writable(args.out_dir / "results.md")
    report = args.report.read_text() if args.report.is_file() else ""
    if args.study is not None:
        study.check(args.study, report, args.report)  # refuse before any section writes
    written = []
    if args.run_dir is not None:
        report, paths = results_2021.make(args.run_dir, args.run_dir_z2, args.out_dir, report, args.report)
        written += paths
    if args.study is not None:
        report, paths = study.make(args.study, args.out_dir, report, args.report)
        written += paths
    if args.models_2019 is not None:
        report, paths = vae_gan_realnvp.make(args.models_2019, args.compare, args.out_dir, report, args.report)
        written += paths
    blocks.write_file(args.report, report)
    return written + [args.report]


def parse_args(argv=None):
    begin, end = results_2021.MARKERS
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, nargs="?", default=None,
                        help="run folder of train_torch.py for the curves and samples (z_dim 20 in the report)")
    parser.add_argument("run_dir_z2", metavar="RUN_DIR_Z2", type=Path, nargs="?", default=None,
                        help="run folder of a z_dim 2 run, for the manifold (and a second row of the table)")
    parser.add_argument("--study", metavar="SWEEP_DIR", type=Path, default=None,
                        help="a sweep folder of part1/sweep.py: the study table and figure, between the report's "
                             f"{study.MARKERS[0]} ... {study.MARKERS[1]} markers")
    parser.add_argument("--models_2019", metavar="DIR", type=Path, default=None,
                        help="folder of the 2019 models' runs (binary-MNIST VAE z_dim 20 and 2, GAN, RealNVP)")
    parser.add_argument("--compare", metavar=("REALNVP_DIR", "VAE_DIR"), type=Path, nargs=2, default=None,
                        help="RealNVP runs and VAE ELBO runs (e.g. the study's) on the same data, paired by seed")
    parser.add_argument("--out_dir", type=Path, default=REPORT_DIR / "figures",
                        help="where the figures and results.md go")
    parser.add_argument("--report", type=Path, default=REPORT_DIR / "report.md",
                        help=f"Markdown file whose text between {begin} and {end} is replaced")
    return parser.parse_args(argv)


def cli(argv=None):
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
