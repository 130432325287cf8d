"""Make the report's figures and results table from run folders written by part1/train_torch.py.

    python report/make_figures.py RUN_DIR [RUN_DIR_Z2]

RUN_DIR is the main run (z_dim 20 in the report): its bpd curves and sample grids become
figures/bpd_curves.png and figures/samples.png. RUN_DIR_Z2 is a z_dim 2 run: its
vae_manifold.png becomes figures/manifold.png (without it, RUN_DIR's own manifold is used when
there is one). Both runs go into figures/results.md, and the same Markdown replaces the text
between the results markers of report.md, so no number in the report is typed by hand.
"""
import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path
from statistics import NormalDist

REPORT_DIR = Path(__file__).resolve().parent
REPO_ROOT = REPORT_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "part1"))

from fmnist import CLASSES, DataError, check_idx  # noqa: E402
from train_torch import args_to_dict, parse_args as train_parse_args  # noqa: E402

PROG = "make_figures.py"
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
TRAIN_SCRIPT = "part1/train_torch.py"
# metrics.json keys shown in the main table (or the decomposition table); the rest go to "other metrics".
MAIN_METRICS = {"test_bpd", "test_rec_loss", "test_reg_loss", "best_epoch", "best_val_bpd", "epochs",
                "seconds_per_epoch", "wall_time_s", "device", "test_iw_bpd", "test_iw_bpd_se"}
SE_SUFFIXES = ("_se", "_stderr", "_std_err", "_sem")


class UserError(Exception):
    """A problem with the inputs, reported as one line (exit status 2)."""


# ----------------------------------------------------------------------------- reading runs

def read_json(path):
    """The JSON object (a dict) in `path`; None when the file is absent."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return value


def read_history(path):
    """history.jsonl as a list of dicts sorted by epoch (blank lines skipped)."""
    if not path.is_file():
        raise UserError(f"{path} is missing: is {path.parent} a run folder of {TRAIN_SCRIPT}?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {number}, is not valid JSON ({error})") from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise UserError(f"{path}, line {number}, has no 'epoch'")
        records.append(record)
    if not records:
        raise UserError(f"{path} holds no epochs")
    return sorted(records, key=lambda r: r["epoch"])


def load_run(run_dir):
    """Everything the report needs from one run folder, as a dict."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    samples = {}
    for path in run_dir.glob("samples_epoch_*.png"):
        match = re.fullmatch(r"samples_epoch_(\d+)\.png", path.name)
        if match:
            samples[int(match.group(1))] = path
    manifold = run_dir / "vae_manifold.png"
    return {
        "dir": run_dir,
        "name": run_dir.resolve().name,
        "history": read_history(run_dir / "history.jsonl"),
        "args": read_json(run_dir / "args.json") or {},
        "metrics": read_json(run_dir / "metrics.json") or {},
        "eval": read_json(run_dir / "eval_test.json"),
        "samples": dict(sorted(samples.items())),
        "manifold": manifold if manifold.is_file() else None,
    }


# ----------------------------------------------------------------------------- formatting

def fmt(value):
    """A number as the report shows it: bpd-sized floats with 4 decimals, nats with 1."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        if abs(value) >= 0.01:
            return f"{value:.4f}"
        return f"{value:.2e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def fmt_pm(value, se):
    """'value ± se' with the same number of decimals; just the value when se is None."""
    if se is None:
        return fmt(value)
    decimals = 1 if abs(value) >= 100 else 4
    return f"{value:,.{decimals}f} ± {se:,.{decimals}f}"


def fmt_nats(value):
    """Nats per image: two decimals."""
    return f"{value:,.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)


def fmt_seconds(seconds):
    if not isinstance(seconds, (int, float)):
        return fmt(seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def nice_name(key):
    """'test_iw_bpd' -> 'test IW bpd': readable headings for keys we do not know in advance."""
    key = re.sub(r"_s$", "_(s)", str(key))
    words = {"iw": "IW", "elbo": "ELBO", "bpd": "bpd", "kl": "KL", "se": "SE", "rec": "rec.", "num": "number of",
             "nll": "NLL", "std": "std", "sem": "SE", "stderr": "SE"}
    return " ".join(words.get(word.lower(), word) for word in str(key).split("_"))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def with_standard_errors(mapping):
    """(label, text) pairs of the scalar entries; 'x' and 'x_se' (or _stderr, _sem) are merged into 'x ± se'."""
    scalars = {k: v for k, v in mapping.items() if is_scalar(v)}

    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def se_key(key):
        return next((key + s for s in SE_SUFFIXES if key + s in scalars and number(scalars[key])
                     and (number(scalars[key + s]) or scalars[key + s] is None)), None)

    merged = {se_key(k) for k in scalars} - {None}
    pairs = []
    for key, value in scalars.items():
        if key in merged:
            continue
        se = se_key(key)
        pairs.append((nice_name(key), fmt_pm(value, scalars[se]) if se else fmt(value)))
    return pairs


def class_label(key, per_class):
    """A FashionMNIST class name for an index 0..9 (int or digit string) of a per-class entry."""
    try:
        index = int(key)
    except (TypeError, ValueError):
        return str(key)
    if per_class and 0 <= index < len(CLASSES):
        return f"{index} {CLASSES[index]}"
    return str(key)


def short_list(values, limit=32):
    """A list of scalars on one line (the first `limit` of a longer one)."""
    text = ", ".join(fmt(v) for v in values[:limit])
    return text + (f", ... ({len(values)} values)" if len(values) > limit else "")


def rows_table(first_header, entries, per_class=False):
    """A table with one row per (name, dict of scalars); 'x' and 'x_se' share a cell as 'x ± se'."""
    pairs = {name: dict(with_standard_errors(entry)) for name, entry in entries}
    headers = list(dict.fromkeys(h for p in pairs.values() for h in p))
    rows = [[class_label(name, per_class)] + [p.get(h, "–") for h in headers] for name, p in pairs.items()]
    return table([first_header] + headers, rows)


def json_sections(data):
    """Markdown for a JSON object whose keys are not known in advance (eval_test.json).

    Scalars go into one quantity/value table; objects of scalars (e.g. elbo, iw, gap) into one
    table with a row each; objects of objects (e.g. per_class) and lists of objects into a table
    of their own; lists of scalars into one line each. Anything else is left out.
    """
    sections = []
    scalars = with_standard_errors(data)
    flat = [(k, v) for k, v in data.items() if isinstance(v, dict) and v
            and all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in v.values())]
    if scalars:
        sections.append(table(["quantity", "value"], [list(pair) for pair in scalars]))
    if flat:
        sections.append(rows_table("estimate", [(nice_name(k), v) for k, v in flat]))
    for key, value in data.items():
        per_class = "class" in str(key).lower()
        if isinstance(value, dict) and value and all(isinstance(x, dict) for x in value.values()):
            body = rows_table("class" if per_class else "entry",
                              [(k, {c: x for c, x in v.items() if is_scalar(x)}) for k, v in value.items()],
                              per_class)
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            body = rows_table("#", [(str(i), {c: x for c, x in v.items() if is_scalar(x)})
                                    for i, v in enumerate(value)])
        elif isinstance(value, list) and value and all(is_scalar(x) for x in value):
            if per_class:
                body = table(["class", nice_name(key)], [[class_label(i, True), fmt(x)] for i, x in enumerate(value)])
            else:
                body = short_list(value)
        elif isinstance(value, dict) and value and key not in dict(flat):
            lines = [f"- {nice_name(k)}: {fmt(x)}" for k, x in value.items() if is_scalar(x)]
            lines += [f"- {nice_name(k)}: {short_list(x)}" for k, x in value.items()
                      if isinstance(x, list) and x and all(is_scalar(y) for y in x)]
            body = "\n".join(lines)
        else:
            continue
        if body:
            sections.append(f"**{nice_name(key)}**\n\n{body}")
    return sections


# ----------------------------------------------------------------------------- the results Markdown

def idx_count(path, magic):
    """The number of images in an IDX file, from its (checked) header; None if missing or unreadable."""
    try:
        return check_idx(path, magic, (28, 28))
    except (OSError, DataError):
        return None


def describe_data(data_dir):
    """'FashionMNIST subset: 2,048 train / 509 test images (`DIR`)', or just the folder when it is not found."""
    if not data_dir:
        return "–"
    path = Path(data_dir)
    if path.is_absolute() and path.is_relative_to(REPO_ROOT):  # e.g. the default, data/ at the repo root
        data_dir = path.relative_to(REPO_ROOT).as_posix()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO_ROOT / path, REPO_ROOT / "part1" / path]
    for root in candidates:
        raw = root / "FashionMNIST" / "raw"
        n_train, n_test = (idx_count(raw / name, 0x0803) for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
        if n_train and n_test:
            kind = "full FashionMNIST" if (n_train, n_test) == (60000, 10000) else "FashionMNIST subset"
            return f"{kind}: {n_train:,} train / {n_test:,} test images (`{data_dir}`)"
    return f"`{data_dir}`"


def command_line(args, defaults):
    """The training command reconstructed from args.json: only flags that differ from the defaults."""
    if not args:
        return "–"
    parts = ["python", TRAIN_SCRIPT]
    for key, value in args.items():
        if key in defaults and defaults[key] == value:
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, list):
            parts += [f"--{key}", *map(str, value)]
        else:
            text = str(value)
            parts += [f"--{key}", text if re.fullmatch(r"[\w@%+=:,./-]+", text) else json.dumps(text)]
    return "`" + " ".join(parts).replace("|", "\\|") + "`"


def curve_summary(run):
    """One sentence on the validation curve, so the report's prose needs no typed numbers."""
    history = run["history"]
    val = {h["epoch"]: h.get("val_bpd") for h in history if h.get("val_bpd") is not None}
    if not val:
        return None
    epochs = sorted(val)
    shown = [e for e in dict.fromkeys([epochs[0], 10, epochs[-1]]) if e in val]
    parts = [f"epoch {e}: {fmt(val[e])}" for e in shown]
    below = next((e for e in epochs if val[e] < 2.0), None)
    text = f"`{run['name']}`: validation bpd after " + ", ".join(parts)
    text += f"; first below 2.0 after epoch {below}." if below is not None else "; never below 2.0."
    return text


def results_markdown(runs):
    """The Markdown block of tables (without a top-level heading)."""
    defaults = args_to_dict(train_parse_args([]))
    has_iw = any("test_iw_bpd" in r["metrics"] for r in runs)
    header = ["run", "data", "epochs", "z_dim", "best epoch", "best val bpd", "test bpd"]
    header += ["test bpd (importance-weighted)"] if has_iw else []
    header += ["seconds / epoch", "wall time", "device", "command"]
    rows = []
    for run in runs:
        m, a = run["metrics"], run["args"]
        epochs = m.get("epochs", a.get("epochs", run["history"][-1]["epoch"]))
        row = [f"`{run['name']}`", describe_data(a.get("data_dir")), fmt(epochs), fmt(a.get("z_dim")),
               fmt(m.get("best_epoch")), fmt(m.get("best_val_bpd")), fmt(m.get("test_bpd"))]
        row += [dict(with_standard_errors({k: m.get(k) for k in ("test_iw_bpd", "test_iw_bpd_se") if k in m}))
                .get("test IW bpd", "–")] if has_iw else []
        row += [fmt_seconds(m.get("seconds_per_epoch")), fmt_seconds(m.get("wall_time_s")), fmt(m.get("device")),
                command_line(a, defaults)]
        rows.append(row)
    parts = [table(header, rows)]
    if any(not r["metrics"] for r in runs):
        parts.append("A run without metrics.json (interrupted before testing) shows – for its test results.")

    parts.append("Test bpd: negative ELBO of the best-by-validation model on the test split, one sample of z "
                 "per image, in bits per dimension. Validation curves (the same quantity on the validation "
                 "split after each epoch):\n\n" + "\n".join(f"- {s}" for s in map(curve_summary, runs) if s))

    # The test ELBO split into its two terms, in nats per image.
    decomposition = [[f"`{r['name']}`", fmt_nats(r["metrics"].get("test_rec_loss")),
                      fmt_nats(r["metrics"].get("test_reg_loss")),
                      fmt_nats(-(r["metrics"]["test_rec_loss"] + r["metrics"]["test_reg_loss"]))
                      if isinstance(r["metrics"].get("test_rec_loss"), (int, float))
                      and isinstance(r["metrics"].get("test_reg_loss"), (int, float)) else "–"]
                     for r in runs if r["metrics"]]
    if decomposition:
        parts.append("#### Test ELBO in nats per image\n\n" + table(
            ["run", "reconstruction loss", "KL to the prior", "ELBO"], decomposition))

    # metrics.json keys this script does not know (new evaluations), one column per run.
    extras = [dict(with_standard_errors({k: v for k, v in r["metrics"].items() if k not in MAIN_METRICS}))
              for r in runs]
    labels = list(dict.fromkeys(label for extra in extras for label in extra))
    if labels:
        rows = [[label] + [extra.get(label, "–") for extra in extras] for label in labels]
        parts.append("#### Other entries of metrics.json\n\n"
                     + table(["quantity"] + [f"`{r['name']}`" for r in runs], rows))

    # eval_test.json from a separate evaluation (part1/evaluate.py): whatever keys it holds.
    for run in runs:
        if run["eval"]:
            parts.append("\n\n".join([f"#### Separate test evaluation of `{run['name']}` (eval_test.json)",
                                       *json_sections(run["eval"])]))
    return "\n\n".join(parts)


def update_report(report_path, block):
    """Replace the text between the results markers of `report_path` with `block`."""
    text = report_path.read_text()
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    new = text[: start + len(BEGIN_MARKER)] + "\n" + block + "\n" + text[end:]
    report_path.write_text(new)


def check_report(report_path):
    if not report_path.is_file():
        raise UserError(f"report {report_path} does not exist (pass --report)")
    text = report_path.read_text()
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise UserError(f"report {report_path} lacks the markers {BEGIN_MARKER} ... {END_MARKER}")


# ----------------------------------------------------------------------------- figures

def new_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg backend (no pyplot, so no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_bpd_curves(run, path):
    history = run["history"]
    fig = new_figure(figsize=(6.4, 4.2), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    for split, label in (("train", "train (average over the epoch)"), ("val", "validation (after the epoch)")):
        points = [(h["epoch"], h[f"{split}_bpd"]) for h in history if h.get(f"{split}_bpd") is not None]
        if points:
            ax.plot(*zip(*points), label=label)
    m = run["metrics"]
    if m.get("test_bpd") is not None and m.get("best_epoch") is not None:
        ax.plot([m["best_epoch"]], [m["test_bpd"]], "k*", markersize=12,
                label=f"test, best-by-validation model (epoch {m['best_epoch']}): {m['test_bpd']:.3f}")
    z_dim = run["args"].get("z_dim")
    ax.set_title(f"Negative ELBO during training{f' (z_dim {z_dim})' if z_dim is not None else ''}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (bits per dimension)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path)


def sample_title(epoch):
    if epoch == 0:
        return "before training (epoch 0)"
    return f"after {epoch} epoch{'s' if epoch != 1 else ''}"


def plot_samples(run, path):
    from matplotlib.image import imread
    samples = run["samples"]
    ncols = min(len(samples), 4)
    nrows = math.ceil(len(samples) / ncols)
    fig = new_figure(figsize=(3.2 * ncols, 3.5 * nrows), dpi=150, layout="constrained")
    for i, (epoch, png) in enumerate(samples.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(imread(png), cmap="gray", interpolation="nearest")
        ax.set_title(sample_title(epoch))
        ax.set_axis_off()
    z_dim = run["args"].get("z_dim")
    fig.suptitle(f"64 samples (z ~ N(0, I), every pixel drawn from its categorical)"
                 f"{f', z_dim {z_dim}' if z_dim is not None else ''}")
    fig.savefig(path)


def plot_manifold(png, path):
    """Re-plot vae_manifold.png with the z1/z2 axes marked at the grid's ppf values."""
    from matplotlib.image import imread
    image = imread(png)
    fig = new_figure(figsize=(8.6, 8.6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    # torchvision's make_grid: padding 2, so cell i spans pixels 2 + 30 i .. 2 + 30 i + 27.
    height, width = image.shape[:2]
    grid = (width - 2) / 30
    if grid == int(grid) and grid >= 2 and height == width:
        grid = int(grid)
        values = [NormalDist().inv_cdf((i + 0.5) / grid) for i in range(grid)]
        positions = [2 + 30 * i + 13.5 for i in range(grid)]  # cell centres
        labels = [f"{v:.2f}" for v in values]
        size = 7 if grid > 10 else 9
        ax.set_xticks(positions, labels, rotation=90, fontsize=size)
        ax.set_yticks(positions, labels, fontsize=size)
        caption = f"{grid}x{grid} decoder means; per axis z = Φ⁻¹((i + 0.5)/{grid}), i = 0..{grid - 1}"
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        caption = "decoder means over a grid of z"
    ax.set_xlabel("$z_1$ (increasing left → right)")
    ax.set_ylabel("$z_2$ (increasing top → bottom)")
    ax.set_title(f"Learned manifold of the z_dim 2 VAE\n{caption}")
    fig.savefig(path)


# ----------------------------------------------------------------------------- main

def main(args):
    """Write the figures and results.md into args.out_dir and update args.report; returns the written paths."""
    runs = [load_run(args.run_dir)]
    if args.run_dir_z2 is not None:
        runs.append(load_run(args.run_dir_z2))
    check_report(args.report)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    written = []

    main_run = runs[0]
    plot_bpd_curves(main_run, out / "bpd_curves.png")
    written.append(out / "bpd_curves.png")

    stale = []
    if main_run["samples"]:
        plot_samples(main_run, out / "samples.png")
        written.append(out / "samples.png")
    else:
        print(f"{PROG}: note: {main_run['dir']} has no samples_epoch_*.png; no samples.png", file=sys.stderr)
        stale.append(out / "samples.png")

    manifold_run = runs[1] if len(runs) > 1 else main_run
    if manifold_run["manifold"] is not None:
        plot_manifold(manifold_run["manifold"], out / "manifold.png")
        written.append(out / "manifold.png")
    else:
        print(f"{PROG}: note: {manifold_run['dir']} has no vae_manifold.png (a z_dim 2 run writes one); "
              "no manifold.png", file=sys.stderr)
        stale.append(out / "manifold.png")
    # evaluate.py's pictures of the main run (decoder means at the posterior means), as they are.
    for name in ("reconstructions", "interpolations"):
        source = main_run["dir"] / f"{name}_test.png"
        if source.is_file():
            shutil.copyfile(source, out / f"{name}.png")
            written.append(out / f"{name}.png")
        else:
            stale.append(out / f"{name}.png")
    for path in stale:  # a figure of an older run must not pass for this one
        path.unlink(missing_ok=True)

    block = results_markdown(runs)
    sources = ", ".join(f"`{r['name']}`" for r in runs)
    generated = f"<!-- generated by report/make_figures.py from {sources}; edits here are overwritten -->"
    (out / "results.md").write_text(f"# Results\n\n{generated}\n\n{block}\n")
    written.append(out / "results.md")
    update_report(args.report, f"{generated}\n\n{block}")
    written.append(args.report)
    for path in written:
        print(f"wrote {path}")
    return written


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                        help="run folder of train_torch.py for the curves and samples (z_dim 20 in the report)")
    parser.add_argument("run_dir_z2", metavar="RUN_DIR_Z2", type=Path, nargs="?", default=None,
                        help="run folder of a z_dim 2 run, for the manifold (and a second row of the table)")
    parser.add_argument("--out_dir", type=Path, default=REPORT_DIR / "figures",
                        help="where the figures and results.md go")
    parser.add_argument("--report", type=Path, default=REPORT_DIR / "report.md",
                        help=f"Markdown file whose text between {BEGIN_MARKER} and {END_MARKER} is replaced")
    return parser.parse_args(argv)


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
