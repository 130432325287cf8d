"""Make the report's figures and results tables from run folders written by part1/train_torch.py.

    python report/make_figures.py RUN_DIR [RUN_DIR_Z2] [--study SWEEP_DIR]
                                  [--models_2019 DIR --compare REALNVP_DIR VAE_DIR]

RUN_DIR is the main run (z_dim 20 in the report): its bpd curves and sample grids become
figures/bpd_curves.png and figures/samples.png, its evaluate.py pictures figures/reconstructions.png
and figures/interpolations.png. RUN_DIR_Z2 is a z_dim 2 run: its vae_manifold.png becomes
figures/manifold.png. Both runs go into figures/results.md, and the same Markdown replaces the text
between the results markers of report.md, so no number in the report is typed by hand. --study and
--models_2019 write the study (2.11) and "The 2019 models" (Part 3) between their own markers. Run
folders are read through part1/runs.py and run_folder.py (the one owner of their format); unfinished
runs are refused before anything is written.
"""
import sys
from pathlib import Path

try:  # part1/'s modules: importable once it is installed (requirements.txt: -e ./part1; pytest: pythonpath)
    from dgmkit.cli import startup as entry
except ModuleNotFoundError:
    raise SystemExit("make_figures.py: error: part1/'s modules are not importable; install them with "
                     "`pip install -e ./part1` in the repository root (`make` does), then retry") from None
if __name__ == "__main__":  # before numpy, matplotlib and torch: a signal while they import ends in one line
    entry.guard_startup()

import torch  # noqa: E402

import compare  # noqa: E402
import models_2019  # noqa: E402
import plots  # noqa: E402
import study  # noqa: E402
from blocks import replace_block, save_figure  # noqa: E402
from dgmkit.cli.args import ArgumentParser, resolve_path  # noqa: E402
from dgmkit.cli.runner import run_cli
from dgmkit.data.datasets import DATASETS, DataError, check_idx, quantize  # noqa: E402
from dgmkit.errors import UserError
from dgmkit.runs.atomic_io import check_writable, write_bytes, write_text  # noqa: E402
from dgmkit.runs.finished import load_finished_run  # noqa: E402
from dgmkit.runs.folder import PICTURES, RunDir  # noqa: E402
from dgmkit.vae.config import REPO_ROOT, defaults, find_data_dir  # noqa: E402

REPORT_DIR = Path(__file__).resolve().parent

PROG = "make_figures.py"
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
STUDY_MARKERS = ("<!-- study:begin -->", "<!-- study:end -->")
LEGACY_FLAGS = {"compile": {False: "off", True: "on"}}  # args.json of runs from before --compile took a value


def fmt(value, decimals=None):
    """A number as the report shows it: ints with commas; floats with `decimals` (None: 4 for bpd-sized
    values, 1 from 100 up)."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{decimals if decimals is not None else 1 if abs(value) >= 100 else 4}f}"


def fmt_pm(value, se, decimals=None):
    return fmt(value, decimals) if se is None else f"{fmt(value, decimals)} ± {fmt(se, decimals)}"


def fmt_seconds(seconds):
    if not isinstance(seconds, (int, float)):
        return fmt(seconds)
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def describe_data(data_dir, dataset="fashion_mnist"):
    """'FashionMNIST subset: 2,048 train / 509 test images (`DIR`)' (or MNIST), or the folder when it is not found."""
    if not data_dir:
        return "–"
    root = find_data_dir(data_dir, dataset)
    shown = Path(data_dir)
    if shown.is_absolute() and shown.is_relative_to(REPO_ROOT.parent):
        shown = Path("..") / shown.relative_to(REPO_ROOT.parent)  # e.g. ../shared/data, as the README says
    counts = []
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        try:
            counts.append(check_idx(root / DATASETS[dataset].folder / "raw" / name, 0x0803, (28, 28)))
        except (OSError, DataError):
            return f"`{shown.as_posix()}`"
    folder = DATASETS[dataset].folder
    kind = f"full {folder}" if counts == [60000, 10000] else f"{folder} subset"
    return f"{kind}: {counts[0]:,} train / {counts[1]:,} test images (`{shown.as_posix()}`)"


def command_line(args, default):
    """The training command rebuilt from args.json: only flags whose value differs from today's default."""
    parts = ["python", "part1/train_torch.py"]
    for key, value in args.items():
        value = LEGACY_FLAGS.get(key, {}).get(value, value) if isinstance(value, bool) else value
        if key not in default or default[key] == value or value is None or key in ("log_dir", "run_name"):
            continue
        if key == "data_dir":
            value = describe_data(value).rsplit("(`", 1)[-1].rstrip("`)") if "(`" in describe_data(value) else value
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        else:
            parts += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    return "`" + " ".join(parts) + "`"


def real_test_images(args):
    """The quantized test images [N, 28, 28] of a run's data folder (its args: data_dir, dataset, bits), or None
    when they cannot be read."""
    if not args.get("data_dir"):
        return None
    dataset = args.get("dataset", "fashion_mnist")
    raw = find_data_dir(args["data_dir"], dataset) / DATASETS[dataset].folder / "raw"
    path = raw / "t10k-images-idx3-ubyte"
    try:
        count = check_idx(path, 0x0803, (28, 28))
    except (OSError, DataError):
        return None
    pixels = torch.frombuffer(bytearray(path.read_bytes()[16:]), dtype=torch.uint8).view(count, 28, 28)
    return quantize(pixels, args.get("bits", 4)).numpy().astype(int)


def curve_summary(run):
    """One sentence on the validation curve, so the report's prose needs no typed numbers."""
    val = {h["epoch"]: h["val_bpd"] for h in run["history"] if h.get("val_bpd") is not None}
    epochs = sorted(val)
    shown = [e for e in dict.fromkeys([epochs[0], 2, 10, epochs[-1]]) if e in val]
    below = next((e for e in epochs if val[e] < 2.0), None)
    return (f"`{run['name']}`: validation bpd after " + ", ".join(f"epoch {e}: {fmt(val[e])}" for e in shown)
            + (f"; first below 2.0 after epoch {below}." if below is not None else "; never below 2.0."))


def evaluation_markdown(run):
    """The tables of a run's eval_test.json (evaluate.py)."""
    e = run["eval"]
    about = table(["checkpoint", "epoch", "data", "images", "K", "seed", "device", "wall time"],
                  [[f"`{Path(e['checkpoint']).name}`", fmt(e["epoch"]), describe_data(e["data_dir"], e.get("dataset", "fashion_mnist")),
                    fmt(e["num_images"]), fmt(e["iw_samples"]), fmt(e["seed"]), e["device"],
                    fmt_seconds(e["wall_time_s"])]])
    estimates = table(["estimate", "bpd", "nats per image"], [
        ["negative ELBO (one z)", fmt_pm(e["bpd"], e["bpd_se"]), fmt_pm(e["nelbo_nats"], e["nelbo_nats_se"], 2)],
        [f"negative IW bound (K = {e['iw_samples']:,})", fmt_pm(e["iw_bpd"], e["iw_bpd_se"]),
         fmt_pm(e["iw_nats"], e["iw_nats_se"], 2)],
        ["gap (paired)", fmt_pm(e["gap_bpd"], e["gap_bpd_se"]), "–"]])
    per_class = table(["class", "count", "bpd", "IW bpd"], [
        [name, fmt(c["count"]), fmt_pm(c["bpd"], c["bpd_se"]), fmt_pm(c["iw_bpd"], c["iw_bpd_se"])]
        for name, c in e["per_class"].items()])
    latents = e["latents"]
    kl = latents.get("kl_per_dim")
    lines = [f"- active units: {e['active_units']} of {latents['z_dim']} (dimensions d with Var_x(μ₀,d(x)) > "
             f"{latents['active_threshold']}, μ₀ the mean of the base Gaussian q₀(z₀|x): E_q[z_d] without a flow)",
             f"- reconstruction {fmt(e['rec_nats'], 2)} nats, KL {fmt(e['kl_nats'], 2)} nats per image"]
    if kl:
        lines.append("- KL per dimension (nats): " + ", ".join(fmt(v) for v in kl))
    n = f"{e['num_images']:,}"
    estimates += (f"\n\n± one standard error of the mean over the {n} test images; for the gap, of the {n} "
                  "per-image differences between the two estimates (paired).")
    per_class += "\n\n± one standard error of the mean over the class's test images (the count column)."
    parts = [f"#### Separate test evaluation of `{run['name']}` (eval_test.json)", about, estimates]
    m = run["metrics"]
    if Path(e["checkpoint"]).name == "best.pt" and e["epoch"] == m.get("best_epoch") and "test_bpd" in m:
        same = (f"This is the checkpoint of the first table (epoch {e['epoch']}): its negative ELBO is "
                f"{fmt(m['test_bpd'])} there (training's final test pass) and {fmt(e['bpd'])} here (this separate "
                f"pass, seed {e['seed']}), which differ only by the random draws of z")
        if "test_iw_bpd" in m:
            same += (f"; its IW bound {fmt(m['test_iw_bpd'])} there (K = {m['iw_samples']:,}) and "
                     f"{fmt(e['iw_bpd'])} here (K = {e['iw_samples']:,}) differ by those draws and by K")
        parts.append(same + ".")
    return "\n\n".join(parts + ["**Per class**", per_class, "**Latents**", "\n".join(lines)])


def results_markdown(runs):
    """The Markdown block of tables (without a top-level heading)."""
    default = defaults()
    header = ["run", "data", "epochs", "z_dim", "best epoch", "best val bpd", "test bpd",
              "test IW bpd (K)", "seconds / epoch", "wall time", "device", "command"]
    rows, real = [], real_test_images(runs[0]["args"])
    count = runs[0]["eval"]["num_images"] if runs[0]["eval"] else len(real) if real is not None else None
    for run in runs:
        m, a = run["metrics"], run["args"]
        iw = f"{fmt_pm(m['test_iw_bpd'], m.get('test_iw_bpd_se'))} ({m['iw_samples']})" if "test_iw_bpd" in m else "–"
        rows.append([f"`{run['name']}`", describe_data(a.get("data_dir"), a.get("dataset", "fashion_mnist")), fmt(m["epochs"]), fmt(a.get("z_dim")),
                     fmt(m["best_epoch"]), fmt(m["best_val_bpd"]), fmt(m["test_bpd"]), iw,
                     fmt_seconds(m["seconds_per_epoch"]), fmt_seconds(m["wall_time_s"]), fmt(m["device"]),
                     command_line(a, default)])
    parts = [table(header, rows),
             "Test bpd: negative ELBO of the best-by-validation model on the test split, one sample of z per image, "
             "in bits per dimension; test IW bpd: the negative importance-weighted bound with K samples, ± one "
             f"standard error of the mean over the {f'{count:,} ' if count else ''}test images. "
             "Validation curves (the same quantity on the validation split after each epoch):\n\n"
             + "\n".join(f"- {curve_summary(r)}" for r in runs),
             "#### Test negative ELBO in nats per image\n\n" + table(
                 ["run", "reconstruction (rec_nats)", "KL to the prior (kl_nats)", "negative ELBO"],
                 [[f"`{r['name']}`", fmt(r["metrics"]["test_rec_nats"], 2), fmt(r["metrics"]["test_kl_nats"], 2),
                   fmt(r["metrics"]["test_rec_nats"] + r["metrics"]["test_kl_nats"], 2)] for r in runs])]
    parts += [evaluation_markdown(r) for r in runs if r["eval"]]
    brightness = plots.brightness_text(runs[0], real)
    return "\n\n".join(parts + ([brightness] if brightness else []))


def make_study(args, report):
    """The study tables (figures/study.md and the report's study block), figures/study_val_bpd.png and
    figures/study_differences.png from the sweep folder args.study; returns (new report text, written paths)."""
    configs = study.load_study(args.study)
    rows = study.study_rows(configs)
    first = next(iter(next(iter(configs.values())).values()))
    iw_samples = first["metrics"].get("iw_samples")
    data = describe_data(first["args"].get("data_dir"), first["args"].get("dataset", "fashion_mnist"))
    fig = plots.new_figure(figsize=(7.2, 4.6), dpi=150, layout="constrained")
    study.plot_validation(configs, fig).set_title(f"Validation bpd per epoch (mean over seeds, band: range)\n"
                                                  f"{data.split(' (`')[0]}", fontsize=10)
    runs = sum(len(r) for r in configs.values())
    generated = (f"<!-- generated by report/make_figures.py --study from {runs} runs in "
                 f"`{Path(args.study).name}`; edits here are overwritten -->")
    pairs = study.comparisons(configs)
    block = (f"{generated}\n\nData: {data}.\n\nMachine (each run's metrics.json): {study.machines_text(configs)}."
             f"\n\n{study.study_markdown(rows, iw_samples, pairs)}")
    diff_fig = plots.new_figure(figsize=(7.2, 1.6 + 0.45 * max(1, len(pairs))), dpi=150, layout="constrained")
    compare.plot_differences([(f"{study.short(c)} − {study.short(r)}", results["test_iw_bpd"])
                              for c, r, results in pairs], diff_fig, "difference in test IW bpd (negative: better)")
    diff_fig.axes[0].set_title(f"Test IW bpd (K = {iw_samples}): per-seed differences, mean, 95% t-interval\n"
                               f"{data.split(' (`')[0]}", fontsize=10)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out_dir / "study_val_bpd.png")
    save_figure(diff_fig, args.out_dir / "study_differences.png")
    write_text(args.out_dir / "study.md", f"# Study\n\n{block}\n")
    return replace_block(report, STUDY_MARKERS, block, args.report), [
        args.out_dir / "study_val_bpd.png", args.out_dir / "study_differences.png", args.out_dir / "study.md"]


def main(args):
    """Write the figures and results.md (and, with --study, the study) into args.out_dir and update args.report;
    returns the written paths. Every input is checked before anything is written."""
    if args.run_dir is None and args.study is None and args.models_2019 is None:
        raise UserError("give a RUN_DIR, a --study SWEEP_DIR, --models_2019 DIR --compare DIR DIR, or several")
    if (args.models_2019 is None) != (args.compare is None):
        raise UserError("--models_2019 and --compare go together (the section holds both)")
    args.out_dir, args.report = resolve_path(args.out_dir, "--out_dir"), resolve_path(args.report, "--report")
    check_writable(args.out_dir / "results.md")
    report = args.report.read_text() if args.report.is_file() else ""
    written = []
    if args.study is not None:
        replace_block(report, STUDY_MARKERS, "", args.report)  # refuse before writing anything
        study.load_study(args.study)
    if args.run_dir is not None:
        report, written = make_results(args, report)
    if args.study is not None:
        report, paths = make_study(args, report)
        written += paths
    if args.models_2019 is not None:
        report, paths = models_2019.make(args.models_2019, args.compare, args.out_dir, report, args.report,
                                         describe_data)
        written += paths
    write_text(args.report, report)
    for path in written + [args.report]:
        print(f"wrote {path}")
    return written + [args.report]


def make_results(args, report):
    """The results figures and tables from RUN_DIR (and RUN_DIR_Z2); returns (new report text, written paths)."""
    runs = [load_finished_run(args.run_dir)] + ([load_finished_run(args.run_dir_z2)] if args.run_dir_z2 else [])
    replace_block(report, (BEGIN_MARKER, END_MARKER), "", args.report)
    out = args.out_dir
    main_run, manifold_run = runs[0], runs[-1]
    data = describe_data(main_run["args"].get("data_dir"), main_run["args"].get("dataset", "fashion_mnist")).split(" (`")[0]
    # Everything is read (and every damaged file refused) before the first file is written.
    figures = {"bpd_curves.png": plots.plot_bpd_curves(main_run, data),
               "samples.png": plots.plot_samples(main_run, data) if main_run["samples"] else None,
               "manifold.png": plots.plot_manifold(manifold_run["manifold"], data) if manifold_run["manifold"] else None}
    copies = {}  # evaluate.py's pictures of the main run, copied as they are
    for name in PICTURES:
        source = RunDir(main_run["dir"]).picture_path(name, "test")
        if source.is_file():
            plots.read_png(source)  # a damaged picture is refused here, before anything is written
        copies[f"{name}.png"] = source.read_bytes() if source.is_file() else None
    block = results_markdown(runs)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in [*figures.items(), *copies.items()]:
        if content is None:  # a figure of an older run must not pass for this one
            if name in figures:
                print(f"{PROG}: note: no {name} (the run has no pictures for it)", file=sys.stderr)
            (out / name).unlink(missing_ok=True)
            continue
        if name in figures:
            save_figure(content, out / name)
        else:
            write_bytes(out / name, content)
        written.append(out / name)
    sources = ", ".join(f"`{r['name']}`" for r in runs)
    generated = f"<!-- generated by report/make_figures.py from {sources}; edits here are overwritten -->"
    write_text(out / "results.md", f"# Results\n\n{generated}\n\n{block}\n")
    report = replace_block(report, (BEGIN_MARKER, END_MARKER), f"{generated}\n\n{block}", args.report)
    return report, written + [out / "results.md"]


def parse_args(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, nargs="?", default=None,
                        help="run folder of train_torch.py for the curves and samples (z_dim 20 in the report)")
    parser.add_argument("run_dir_z2", metavar="RUN_DIR_Z2", type=Path, nargs="?", default=None,
                        help="run folder of a z_dim 2 run, for the manifold (and a second row of the table)")
    parser.add_argument("--study", metavar="SWEEP_DIR", type=Path, default=None,
                        help="a sweep folder of part1/sweep.py: the study table and figure, between the report's "
                             f"{STUDY_MARKERS[0]} ... {STUDY_MARKERS[1]} markers")
    parser.add_argument("--models_2019", metavar="DIR", type=Path, default=None,
                        help="folder of the 2019 models' runs (binary-MNIST VAE z_dim 20 and 2, GAN, RealNVP)")
    parser.add_argument("--compare", metavar=("REALNVP_DIR", "VAE_DIR"), type=Path, nargs=2, default=None,
                        help="RealNVP runs and VAE ELBO runs (e.g. the study's) on the same data, paired by seed")
    parser.add_argument("--out_dir", type=Path, default=REPORT_DIR / "figures",
                        help="where the figures and results.md go")
    parser.add_argument("--report", type=Path, default=REPORT_DIR / "report.md",
                        help=f"Markdown file whose text between {BEGIN_MARKER} and {END_MARKER} is replaced")
    return parser.parse_args(argv)


def cli(argv=None):
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
