"""Training throughput, side by side in one process: the assignment template's pipeline, this
project's default, its fastest option combination, and the training step alone (the ceiling).

    python benchmark.py                         # synthetic 4-bit data, 60,000 images, CPU or CUDA
    python benchmark.py --data_dir ../data      # the real files instead
    python benchmark.py --full_epoch            # also one real epoch of train_torch.py: seconds, peak RSS

Every figure is images per second of training (forward + backward + Adam), after warm-up, over a
fixed number of steps; each is measured --repeats times, interleaved, and the median is reported.
The JSON records its paths (--out and --data_dir, in "command" and "data") relative to its own folder
(dgmkit/runs/paths.py), so that it names nothing of the machine that wrote it.
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line 
    from dgmkit.cli import startup
    startup.guard_startup()

import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader

from dgmkit.cli.args import ArgumentParser, int_at_least, resolve_path
from dgmkit.cli.runner import run_cli
from dgmkit.data.datasets import RAW_FILES, fmnist
from dgmkit.engine import hardware
from dgmkit.engine.epoch import autocast
from dgmkit.engine.hardware import resolve_device
from dgmkit.runs.atomic_io import check_writable, write_json
from dgmkit.runs.paths import record, record_command
from dgmkit.vae.config import parse_train_args
from dgmkit.vae.model import VAE
from dgmkit.vae.training import build_model, train_vae

PART1_DIR = Path(__file__).resolve().parent


def write_synthetic_idx(root, num_images, seed=0):
    """Random uint8 images in torchvision's FashionMNIST layout (train: num_images, test: num_images // 6)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for (image_file, label_file), n in zip((RAW_FILES[:2], RAW_FILES[2:]), (num_images, max(num_images // 6, 1))):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        (raw / image_file).write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
        (raw / label_file).write_bytes(struct.pack(">II", 0x0801, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    return Path(root)


def template_quantize(x):
    """The template's per-sample transform after ToTensor(): [0, 1] floats -> 16 levels."""
    return (x * 16).floor().clamp(max=15).long()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_baseline(data_dir, device, batch_size, steps, warmup, workers):
    """The template: per-sample ToTensor + quantize, DataLoader with workers, fp32 NCHW, .item() per step."""
    transform = torchvision.transforms.Compose([torchvision.transforms.ToTensor(), template_quantize])
    dataset = torchvision.datasets.FashionMNIST(data_dir, train=True, transform=transform, download=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    model = VAE(num_filters=32, z_dim=20, lr=1e-3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches, seen = counted(cycled(loader))

    def run(n):
        for _ in range(n):
            imgs, _ = next(batches)
            L_rec, L_reg, bpd = model(imgs.to(device))
            optimizer.zero_grad()
            bpd.backward()
            optimizer.step()
            bpd.item()  # the template logs every step

    run(warmup)
    return images_per_second(run, steps, seen, device)


def cycled(loader):
    """The loader's batches, epoch after epoch without end (each epoch draws its own order), so a training set
    smaller than steps x batch size is trained on again rather than ending the measurement early."""
    while True:
        yield from loader


def counted(batches):
    """(iterator over `batches`, counter): counter[0] is the number of images the iterator has yielded."""
    seen = [0]

    def counting():
        for imgs, labels in batches:
            seen[0] += len(imgs)
            yield imgs, labels
    return counting(), seen


def images_per_second(run, steps, seen, device):
    """Time run(steps) and divide the images it really trained on (counted, so a short last batch or a small
    training set cannot inflate the figure) by the seconds."""
    before = seen[0]
    seconds = timed(lambda: run(steps), device)
    return (seen[0] - before) / seconds


class ProjectTrainer:
    """train_vae on the fmnist loaders, with the model built by dgmkit.vae.training.build_model from `args` and `choice`
    (the resolved precision / compile / channels_last)."""

    def __init__(self, args, choice, data_dir, device):
        self.args, self.choice, self.device = args, choice, device
        self.loader = fmnist(data_dir, args.batch_size, args.num_workers, download=False,
                             generator=torch.Generator().manual_seed(0),
                             device=device if device.type == "cuda" else None)[0]
        torch.manual_seed(0)
        self.model, self.optimizer, self.loss_fn = build_model(args, device, choice)

    def images_per_second(self, steps, warmup):
        batches, seen = counted(cycled(self.loader))
        run = lambda n: train_vae(self.model, itertools.islice(batches, n), self.optimizer,  # noqa: E731
                                  self.choice["precision"], self.args.grad_clip, loss_fn=self.loss_fn)
        run(warmup)
        return images_per_second(run, steps, seen, self.device)

    def step_images_per_second(self, steps, warmup):
        """The training step alone, on one fixed batch already on the device: the ceiling."""
        imgs = next(iter(self.loader))[0].to(self.device)

        def run(n):
            for _ in range(n):
                with autocast(self.device, self.choice["precision"]):
                    loss = self.loss_fn(imgs)["objective_bpd"]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()

        run(warmup)
        return steps * len(imgs) / timed(lambda: run(steps), self.device)


def option(device, batch_size, precision, channels_last, compile_, **family):
    """(settings, choice) of one option combination; `family` overrides e.g. objective, train_samples, flow."""
    args = parse_train_args(["--device", device.type, "--batch_size", str(batch_size)])
    vars(args).update(family)
    return args, {"precision": precision, "channels_last": channels_last, "compile": compile_}


def describe(choice):
    return (f"{choice['precision']}, {'channels_last' if choice['channels_last'] else 'NCHW'}"
            f"{', compile' if choice['compile'] else ''}")


def full_epoch(data_dir, device_name):
    """One real epoch of train_torch.py (defaults) in a child process: its epoch seconds and peak RSS.

    os.wait4 gives the resource usage of that child alone (RUSAGE_CHILDREN would also count the
    baseline's DataLoader workers).
    """
    with tempfile.TemporaryDirectory() as logs, open(Path(logs) / "output.txt", "w+") as output:
        child = subprocess.Popen([sys.executable, str(PART1_DIR / "train_torch.py"), "--data_dir", str(data_dir),
                                  "--epochs", "1", "--sample_epochs", "--final_iw_samples", "0", "--log_dir", logs,
                                  "--device", device_name, "--no-progress_bar"], stdout=output, stderr=output)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            output.seek(0)
            raise RuntimeError(f"train_torch.py failed: {output.read()[-2000:]}")
        history = json.loads(next(Path(logs).glob("*/history.jsonl")).read_text().splitlines()[0])
    return {"epoch_seconds": history["seconds"], "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux: KiB
            "projected_80_epochs_minutes": 80 * history["seconds"] / 60}


def main(args):
    device = resolve_device(args.device)
    typed_paths = (args.out, args.data_dir)  # recorded relative to the results file's folder (runs/paths.py)
    args.out = resolve_path(args.out, "--out")
    check_writable(args.out, "--out")  # before anything is measured, so no result is lost
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    batch = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or write_synthetic_idx(tmp, args.num_images)
        num_train = len(fmnist(data_dir, batch, download=False)[0].dataset)
        # First, while this process is small: a forked child's peak RSS counts the parent's pages.
        epoch = full_epoch(data_dir, args.device) if args.full_epoch else None
        # What the CLI picks with no speed flags for 80 epochs of this training set.
        auto = hardware.choose(device, "auto", "auto", None, 80 * -(-num_train // batch))
        default = option(device, batch, auto["precision"], auto["channels_last"], auto["compile"])
        print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
              f"data {args.data_dir or f'synthetic, {args.num_images} images'} | batch {batch} | "
              f"{args.steps} steps after {args.warmup} warm-up, median of {args.repeats}\n"
              f"auto: {hardware.summary_line(auto)}", flush=True)

        # Candidates for "fastest": every precision x memory format, and compile on the best of them;
        # a short probe of the step alone drops the hopeless ones (under half the best).
        candidates = [option(device, batch, p, cl, False) for p in ("fp32", "bf16") for cl in (False, True)]
        probes = {}
        for cand in candidates:
            probes[describe(cand[1])] = ProjectTrainer(*cand, data_dir, device).step_images_per_second(
                args.probe_steps, args.warmup)
            print(f"  probe, step alone, {describe(cand[1]):28s} {probes[describe(cand[1])]:8.0f} images/s", flush=True)
        if not args.no_compile and hardware.can_compile(device)[0]:
            best = max(candidates, key=lambda c: probes[describe(c[1])])[1]
            compiled = option(device, batch, best["precision"], best["channels_last"], True)
            trainer = ProjectTrainer(*compiled, data_dir, device)
            start = time.perf_counter()
            trainer.step_images_per_second(1, 1)  # compilation happens here
            compile_seconds = time.perf_counter() - start
            probes[describe(compiled[1])] = trainer.step_images_per_second(args.probe_steps, args.warmup)
            print(f"  probe, step alone, {describe(compiled[1]):28s} {probes[describe(compiled[1])]:8.0f} images/s "
                  f"(compiled in {compile_seconds:.0f} s)", flush=True)
            candidates.append(compiled)
        finalists = [c for c in candidates if probes[describe(c[1])] >= 0.5 * max(probes.values())]
        if describe(default[1]) not in [describe(c[1]) for c in finalists]:
            finalists.append(default)

        # The measurements, interleaved, repeated: baseline, every finalist through train_vae, ceiling.
        trainers = {describe(c[1]): ProjectTrainer(*c, data_dir, device) for c in finalists}
        runs = {"baseline": [], **{f"options: {name}": [] for name in trainers}, "ceiling": []}
        for repeat in range(args.repeats):
            runs["baseline"].append(bench_baseline(data_dir, device, batch, args.steps, args.warmup,
                                                   args.baseline_workers))
            for name, trainer in trainers.items():
                runs[f"options: {name}"].append(trainer.images_per_second(args.steps, args.warmup))
            runs["ceiling"].append(trainers[describe(default[1])].step_images_per_second(args.steps, args.warmup))
            print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items()), flush=True)
        all_medians = {k: statistics.median(v) for k, v in runs.items()}
        fastest = max(trainers, key=lambda name: all_medians[f"options: {name}"])
        median = {"baseline": all_medians["baseline"], "default": all_medians[f"options: {describe(default[1])}"],
                  "fastest": all_medians[f"options: {fastest}"], "ceiling": all_medians["ceiling"]}
        families = {} if args.no_families else family_throughput(default, data_dir, device, args)
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": record_command(sys.argv, typed_paths, args.out.parent),
            "device": str(device), **hardware.machine(device), "cpu_native_bf16": hardware.cpu_has_native_bf16(),
            "data": args.data_dir and record(args.data_dir, args.out.parent) or f"synthetic, {args.num_images} images",
            "batch_size": batch, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "baseline_workers": args.baseline_workers, "auto_choice": auto,
            "default_options": describe(default[1]), "fastest_options": fastest,
            "images_per_second": median, "runs": runs, "step_probe_images_per_second": probes,
            "family_images_per_second": families,
            "ratios": {"default/baseline": median["default"] / median["baseline"],
                       "default/ceiling": median["default"] / median["ceiling"],
                       "fastest/baseline": median["fastest"] / median["baseline"]},
        }
        if epoch is not None:
            result["full_epoch"] = epoch

    print(f"\n{'pipeline':10s} {'options':34s} {'images/s':>9s}")
    for name, options in (("baseline", f"template, {args.baseline_workers} workers, fp32 NCHW"),
                          ("default", f"auto: {describe(default[1])}"), ("fastest", fastest),
                          ("ceiling", f"step alone, {describe(default[1])}")):
        print(f"{name:10s} {options:34s} {median[name]:9.0f}")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()))
    for name, value in families.items():
        print(f"family {name:28s} {value:9.0f} images/s")
    if args.full_epoch:
        fe = result["full_epoch"]
        print(f"one epoch of train_torch.py: {fe['epoch_seconds']:.1f} s, peak RSS {fe['peak_rss_bytes'] / 2**20:.0f} MiB,"
              f" 80 epochs projected {fe['projected_80_epochs_minutes']:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"written to {args.out}")
    return result


FAMILIES = {"elbo K=1": {}, "iwae K=5": {"objective": "iwae", "train_samples": 5},
            "iwae K=50": {"objective": "iwae", "train_samples": 50},
            "planar L=10": {"flow": "planar", "flow_length": 10}, "radial L=10": {"flow": "radial", "flow_length": 10}}


def family_throughput(default, data_dir, device, args):
    """Training images/s of each objective and posterior family with the default speed options, eager
    (median of --repeats runs of --family_steps steps)."""
    choice = {**default[1], "compile": False}
    results = {}
    for name, family in FAMILIES.items():
        trainer = ProjectTrainer(*option(device, args.batch_size, choice["precision"], choice["channels_last"],
                                         False, **family), data_dir, device)
        results[name] = statistics.median(trainer.images_per_second(args.family_steps, args.warmup)
                                          for _ in range(args.repeats))
        print(f"  family {name:24s} {results[name]:8.0f} images/s", flush=True)
    return results


def parse_benchmark_args(argv=None):
    parser = ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to measure")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder holding FashionMNIST/raw/ (default: synthetic data of --num_images)")
    parser.add_argument("--num_images", type=int_at_least(10), default=60_000, help="size of the synthetic training set")
    parser.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per training step (all pipelines)")
    parser.add_argument("--steps", type=int_at_least(1), default=30, help="timed training steps per measurement")
    parser.add_argument("--probe_steps", type=int_at_least(1), default=5, help="timed steps per option candidate")
    parser.add_argument("--family_steps", type=int_at_least(1), default=10, help="timed steps per family")
    parser.add_argument("--warmup", type=int_at_least(0), default=3, help="untimed steps before each measurement")
    parser.add_argument("--repeats", type=int_at_least(1), default=3, help="interleaved repetitions; medians are reported")
    parser.add_argument("--baseline_workers", type=int_at_least(0), default=4, help="DataLoader workers of the template")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile candidate")
    parser.add_argument("--no_families", action="store_true", help="skip the objective/posterior families")
    parser.add_argument("--full_epoch", action="store_true",
                        help="also run one epoch of train_torch.py: epoch seconds, peak RSS, 80-epoch projection")
    parser.add_argument("--out", type=Path, default=PART1_DIR / "benchmark.json", help="JSON results file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_cli("benchmark.py", main, parse_benchmark_args())
