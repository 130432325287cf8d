"""The report's results (the 2021 assignment, report 2.8-2.10): from the main run (z_dim 20) its bpd curves and
sample grids as figures/bpd_curves.png and figures/samples.png and its evaluate.py pictures as
figures/reconstructions.png and figures/interpolations.png; from a z_dim 2 run its manifold as figures/manifold.png;
from both the results tables, as figures/results.md and between the report's results markers.

The runs must be on the data the report's title states ('... a VAE on 4-bit FashionMNIST': dataset and bits), and
on the same data as each other; anything else is one line before anything is written. A figure of an older run that
the given runs have no picture for is removed, and the removal said (a stale figure must not pass for theirs).
"""
import re
from pathlib import Path

import plots
from blocks import generated_comment, note, remove_file, replace_block, save_figure, write_file, write_section
from dgmkit.cli.runner import one_line
from dgmkit.data.datasets import DATASETS
from dgmkit.errors import UserError
from dgmkit.runs.finished import load_finished_run
from dgmkit.runs.folder import PICTURES, RunDir
from dgmkit.vae.config import defaults
from formats import DASH, count, number, number_pm, seconds, table
from run_data import data_key, data_name, describe_data, describe_run_data, real_test_images, same_data

MARKERS = ("<!-- results:begin -->", "<!-- results:end -->")
TITLE_DATA = re.compile(r"\b(?:(\d)-bit|(binary)) (" + "|".join(s.folder for s in DATASETS.values()) + r")\b")
LEGACY_FLAGS = {"compile": {False: "off", True: "on"}}  # args.json of runs from before --compile took a value


def command_line(args, default, run_dir=None):
    """The training command rebuilt from args.json (in the run folder run_dir): only flags whose value differs from
    today's default."""
    parts = ["python", "part1/train_torch.py"]
    for key, value in args.items():
        value = LEGACY_FLAGS.get(key, {}).get(value, value) if isinstance(value, bool) else value
        if key not in default or default[key] == value or value is None or key in ("log_dir", "run_name"):
            continue
        if key == "data_dir":
            shown = describe_data(value, args.get("dataset", "fashion_mnist"), run_dir)
            value = shown.rsplit("(`", 1)[-1].rstrip("`)") if "(`" in shown else value
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        else:
            parts += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    return "`" + " ".join(parts) + "`"


def curve_summary(run):
    """One sentence on the validation curve, so the report's prose needs no typed numbers."""
    val = {h["epoch"]: h["val_bpd"] for h in run["history"] if h.get("val_bpd") is not None}
    epochs = sorted(val)
    shown = [e for e in dict.fromkeys([epochs[0], 2, 10, epochs[-1]]) if e in val]
    below = next((e for e in epochs if val[e] < 2.0), None)
    return (f"`{run['name']}`: validation bpd after " + ", ".join(f"epoch {e}: {number(val[e])}" for e in shown)
            + (f"; first below 2.0 after epoch {below}." if below is not None else "; never below 2.0."))


def evaluation_markdown(run):
    """The tables of a run's eval_test.json (evaluate.py)."""
    e = run["eval"]
    about = table(["checkpoint", "epoch", "data", "images", "K", "seed", "device", "wall time"],
                  [[f"`{Path(e['checkpoint']).name}`", number(e["epoch"]),
                    describe_data(e["data_dir"], data_key(run)[0], run["dir"]),
                    number(e["num_images"]), number(e["iw_samples"]), number(e["seed"]), e["device"],
                    seconds(e["wall_time_s"])]])
    estimates = table(["estimate", "bpd", "nats per image"], [
        ["negative ELBO (one z)", number_pm(e["bpd"], e["bpd_se"]), number_pm(e["nelbo_nats"], e["nelbo_nats_se"], 2)],
        [f"negative IW bound (K = {count(e['iw_samples'])})", number_pm(e["iw_bpd"], e["iw_bpd_se"]),
         number_pm(e["iw_nats"], e["iw_nats_se"], 2)],
        ["gap (paired)", number_pm(e["gap_bpd"], e["gap_bpd_se"]), DASH]])
    per_class = table(["class", "count", "bpd", "IW bpd"], [
        [name, number(c["count"]), number_pm(c["bpd"], c["bpd_se"]), number_pm(c["iw_bpd"], c["iw_bpd_se"])]
        for name, c in e["per_class"].items()])
    latents = e["latents"]
    kl = latents.get("kl_per_dim")
    lines = [f"- active units: {e['active_units']} of {latents['z_dim']} (dimensions d with Var_x(μ₀,d(x)) > "
             f"{latents['active_threshold']}, μ₀ the mean of the base Gaussian q₀(z₀|x): E_q[z_d] without a flow)",
             f"- reconstruction {number(e['rec_nats'], 2)} nats, KL {number(e['kl_nats'], 2)} nats per image"]
    if kl:
        lines.append("- KL per dimension (nats): " + ", ".join(number(v) for v in kl))
    n = count(e["num_images"])
    estimates += (f"\n\n± one standard error of the mean over the {n} test images; for the gap, of the {n} "
                  "per-image differences between the two estimates (paired).")
    per_class += "\n\n± one standard error of the mean over the class's test images (the count column)."
    parts = [f"#### Separate test evaluation of `{run['name']}` (eval_test.json)", about, estimates]
    m = run["metrics"]
    if Path(e["checkpoint"]).name == "best.pt" and e["epoch"] == m.get("best_epoch") and "test_bpd" in m:
        same = (f"This is the checkpoint of the first table (epoch {e['epoch']}): its negative ELBO is "
                f"{number(m['test_bpd'])} there (training's final test pass) and {number(e['bpd'])} here (this "
                f"separate pass, seed {e['seed']}), which differ only by the random draws of z")
        if "test_iw_bpd" in m:
            same += (f"; its IW bound {number(m['test_iw_bpd'])} there (K = {count(m['iw_samples'])}) and "
                     f"{number(e['iw_bpd'])} here (K = {count(e['iw_samples'])}) differ by those draws and by K")
        parts.append(same + ".")
    return "\n\n".join(parts + ["**Per class**", per_class, "**Latents**", "\n".join(lines)])


def results_markdown(runs):
    """The Markdown block of tables (without a top-level heading)."""
    default = defaults()
    header = ["run", "data", "epochs", "z_dim", "best epoch", "best val bpd", "test bpd",
              "test IW bpd (K)", "seconds / epoch", "wall time", "device", "command"]
    rows, real = [], real_test_images(runs[0]["args"], runs[0]["dir"])
    images = runs[0]["eval"]["num_images"] if runs[0]["eval"] else len(real) if real is not None else None
    for run in runs:
        m, a = run["metrics"], run["args"]
        iw = (f"{number_pm(m['test_iw_bpd'], m.get('test_iw_bpd_se'))} ({m['iw_samples']})" if "test_iw_bpd" in m
              else DASH)
        rows.append([f"`{run['name']}`", describe_run_data(a, run_dir=run["dir"]), number(m["epochs"]),
                     number(a.get("z_dim")),
                     number(m["best_epoch"]), number(m["best_val_bpd"]), number(m["test_bpd"]), iw,
                     seconds(m["seconds_per_epoch"]), seconds(m["wall_time_s"]), number(m["device"]),
                     command_line(a, default, run["dir"])])
    parts = [table(header, rows),
             "Test bpd: negative ELBO of the best-by-validation model on the test split, one sample of z per image, "
             "in bits per dimension; test IW bpd: the negative importance-weighted bound with K samples, ± one "
             f"standard error of the mean over the {f'{count(images)} ' if images else ''}test images. "
             "Validation curves (the same quantity on the validation split after each epoch):\n\n"
             + "\n".join(f"- {curve_summary(r)}" for r in runs),
             "#### Test negative ELBO in nats per image\n\n" + table(
                 ["run", "reconstruction (rec_nats)", "KL to the prior (kl_nats)", "negative ELBO"],
                 [[f"`{r['name']}`", number(r["metrics"]["test_rec_nats"], 2), number(r["metrics"]["test_kl_nats"], 2),
                   number(r["metrics"]["test_rec_nats"] + r["metrics"]["test_kl_nats"], 2)] for r in runs])]
    parts += [evaluation_markdown(r) for r in runs if r["eval"]]
    brightness = plots.brightness_text(runs[0], real)
    return "\n\n".join(parts + ([brightness] if brightness else []))


def stated_data(report):
    """(dataset, bits) that the report's title (its first line) names, e.g. '... a VAE on 4-bit FashionMNIST', or
    None when it names none."""
    match = TITLE_DATA.search(report.split("\n", 1)[0])
    if match is None:
        return None
    dataset = next(name for name, source in DATASETS.items() if source.folder == match[3])
    return dataset, 1 if match[2] else int(match[1])


def check_data(runs, report, report_path):
    """A one-line UserError unless the runs are on one dataset at one bit depth, the one the report's title states."""
    key = same_data(runs, "RUN_DIR and RUN_DIR_Z2")
    stated = stated_data(report)
    if stated is not None and key != stated:
        dataset, bits = stated
        raise UserError(f"{one_line(runs[0]['dir'])} is a run on {data_name(key)} (its args.json), but the report "
                        f"{one_line(report_path)} is about {data_name(stated)} (its title): its results come only from "
                        f"runs of `--dataset {dataset} --bits {bits}`; give such runs, or write another --report")


def make(run_dir, run_dir_z2, out, report, report_path):
    """The results figures and tables from run_dir (and run_dir_z2, or None) into the folder `out`; returns (new
    report text, written paths). Everything is read (and every damaged file refused) before the first file is
    written."""
    runs = [load_finished_run(run_dir)] + ([load_finished_run(run_dir_z2)] if run_dir_z2 else [])
    replace_block(report, MARKERS, "", report_path)
    check_data(runs, report, report_path)
    main_run, manifold_run = runs[0], runs[-1]
    data = describe_run_data(main_run["args"], folder=False, run_dir=main_run["dir"])
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
            source = {"samples.png": "samples_epoch_*.png", "manifold.png": "vae_manifold.png"}.get(
                name, f"{name[:-4]}_test.png (evaluate.py)")
            run = manifold_run if name == "manifold.png" else main_run
            if not remove_file(out / name, f"`{run['name']}` has no {source} for it, and an older run's figure "
                                           "must not pass for this one") and name in figures:
                note(f"no {name} (`{run['name']}` has no {source})")
            continue
        if name in figures:
            save_figure(content, out / name)
        else:
            write_file(out / name, content)
        written.append(out / name)
    sources = ", ".join(f"`{r['name']}`" for r in runs)
    block = f"{generated_comment(f'from {sources}')}\n\n{block}"
    report = write_section(out / "results.md", "Results", block, report, MARKERS, report_path)
    return report, written + [out / "results.md"]
