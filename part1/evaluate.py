"""Evaluate a trained VAE checkpoint: ELBO and importance-weighted bpd, per class, latents, pictures.

    python evaluate.py RUN_DIR            # RUN_DIR/checkpoints/best.pt, test split, K = 100
    python evaluate.py RUN_DIR/checkpoints/last.pt --split val --iw_samples 1000

Two estimates of the test log-likelihood, in nats per image and in bits per dimension (dgmkit/vae/estimates.py):
the ELBO with one z ~ q(z|x), exactly as VAE.forward, and the importance-weighted bound of Burda et
al. (2016), which is at least as tight and tends to log p(x) as K grows. Results go to eval_<split>.json
in the run folder (an earlier one, e.g. training's own, is replaced, and the last line says what it held; its
figures stay in the new file under "replaced"), pictures to reconstructions_<split>.png and
interpolations_<split>.png there, and everything to the run's TensorBoard (the model and the pictures:
dgmkit/vae/evaluation.py). A chunk too large for memory is one line naming the flags to lower; SIGINT or SIGTERM
stops it within about a second even inside one long decoder call (stop_promptly).
"""
if __name__ == "__main__":  # before torch: Ctrl-C or SIGTERM while it imports ends in one line
    from dgmkit.cli import startup
    startup.guard_startup()

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from dgmkit.cli.args import ArgumentParser, int_at_least, resolve_path, seed_type
from dgmkit.cli.runner import run_cli
from dgmkit.data.datasets import BITS, DATASETS, load_data
from dgmkit.data.folders import resolve_data_dir
from dgmkit.engine.hardware import resolve_device
from dgmkit.engine.session import configure_cuda
from dgmkit.errors import (EXIT_SIGINT, EXIT_SIGTERM, Interrupted, Terminated, UserError, allocation_failure,
                           signal_name_and_status)
from dgmkit.places import REPO_ROOT
from dgmkit.runs.atomic_io import check_destination
from dgmkit.runs.checkpoints import CheckpointError
from dgmkit.runs.folder import PICTURES, RunDir
from dgmkit.runs.paths import record
from dgmkit.vae.estimates import CHUNK_SIZE, evaluate_loader, evaluation_line, evaluation_record, replaced_line
from dgmkit.vae.evaluation import load_model, save_pictures, write_evaluation

PROG = "evaluate.py"
STOPS = {signal.SIGINT: ("SIGINT", EXIT_SIGINT), signal.SIGTERM: ("SIGTERM", EXIT_SIGTERM)}


@contextlib.contextmanager
def stop_promptly(line, grace_s=1.0):
    """For a block that writes nothing (the estimates' computation): a SIGINT or SIGTERM that the main thread has not
    acted on within grace_s seconds ends the process from a watcher thread with `line(name)` on stderr and the
    signal's status. Python runs a signal handler only between bytecodes of the main thread, so inside one long C call
    (a decoder over a large chunk: a minute on the CPU) the handler of run_cli waits for the call to return; the
    watcher reads the signal's byte from the wakeup fd, which the C-level handler writes at once. When the main
    thread is prompt, its own handling (the same line, from main's except) wins: the block's end disarms the watcher.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set the wakeup fd
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    done, claim = threading.Event(), threading.Lock()

    def watch():
        while (got := os.read(read_fd, 1)) and not done.is_set():
            if got[0] in STOPS and not done.wait(grace_s):
                with claim:  # main cannot leave the block (and print its own line) once this has begun
                    if not done.is_set():
                        name, status = STOPS[got[0]]
                        erase = "\r\x1b[K" if os.isatty(2) else ""  # a progress bar's line, as tqdm's close does
                        os.write(2, f"{erase}{PROG}: {line(name)}\n".encode())
                        os._exit(status)

    watcher = threading.Thread(target=watch, name="stop_promptly", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with claim:
            done.set()
        signal.set_wakeup_fd(previous)
        os.close(write_fd)  # the watcher's read ends
        watcher.join()
        os.close(read_fd)


def out_of_memory(args, images, needed, written):
    """The one line of a failed allocation while evaluating a split of `images` images: the flags that set how many
    latents one decoder call takes (iw_log_likelihood: a batch's B images x min(K, chunk_size // B) samples)."""
    batch = min(args.batch_size, images)
    per_call = batch * min(args.iw_samples, max(1, args.chunk_size // batch))
    done = f"written before it: {', '.join(written)}" if written else "nothing was written"
    return UserError(f"out of memory while evaluating ({needed}): one decoder call takes up to {per_call:,} latents "
                     f"(batches of {batch} images, --batch_size {args.batch_size}, x min(--iw_samples "
                     f"{args.iw_samples}, --chunk_size {args.chunk_size} / {batch})); lower --chunk_size (default "
                     f"{CHUNK_SIZE}) or --batch_size, which change only the random draws, not the estimates; {done}")


def resolve_checkpoint(path):
    """RUN_DIR -> (RUN_DIR/checkpoints/best.pt, RunDir); a .pt file -> (it, the RunDir of its run folder)."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).checkpoint("best"), RunDir(path)
    return path, RunDir.of_checkpoint(path)


def main(args):
    """Evaluate one checkpoint on one split; write eval_<split>.json, pictures and TensorBoard entries.

    Returns:
        the dict written to eval_<split>.json.
    """
    start = time.time()
    device = resolve_device(args.device)
    ckpt_path, run_dir = resolve_checkpoint(resolve_path(args.checkpoint, "RUN_DIR_OR_CHECKPOINT"))
    model, ckpt = load_model(ckpt_path, device)
    if device.type == "cuda":  # the training's TF32 setting (--precision fp32: none), so its figures compare
        configure_cuda(deterministic=False, precision=ckpt["args"].get("precision", "auto"))
    data = {name: ckpt["args"].get(name, default) for name, default in (("dataset", "fashion_mnist"), ("bits", 4))}
    for name, value in data.items():  # the data the model was trained on; a flag may only confirm it
        if getattr(args, name) is not None and getattr(args, name) != value:
            raise CheckpointError(f"{ckpt_path} holds a model of --{name} {value}; it cannot be evaluated with "
                                  f"--{name} {getattr(args, name)} (drop the flag)")
    # The checkpoint's data_dir is relative to its run folder (absolute in older records): runs/paths.py.
    data_dir = args.data_dir if args.data_dir is not None else resolve_data_dir(
        ckpt["args"].get("data_dir", REPO_ROOT / "data"), run_dir, data["dataset"])
    loaders = load_data(data_dir, data["dataset"], data["bits"], args.batch_size, 0, download=False)
    loader = {"val": loaders[1], "test": loaders[2]}[args.split]
    if not os.access(run_dir.path, os.W_OK):
        raise UserError(f"cannot write the results into {run_dir}; make it writable")
    for path in (run_dir.eval_path(args.split), *(run_dir.picture_path(k, args.split) for k in PICTURES)):
        check_destination(path)  # before the long computation

    written = []  # what this evaluation has written so far, for the line an interrupt prints
    target = run_dir.eval_path(args.split).name
    try:
        with stop_promptly(lambda name: f"stopped by {name}; {target} was not (re)written; nothing was written"):
            per_image = evaluate_loader(model, loader, args.iw_samples, args.chunk_size, args.seed, progress=None)
        step = ckpt.get("epoch") or 0  # checked by load_model: None or a whole number
        # Files only after the long computation; eval_<split>.json last, so it is the old one or the whole new one.
        with run_dir.locked(), SummaryWriter(str(run_dir)) as writer:  # writable (checked above)
            written.append("a TensorBoard event file")
            pictures = save_pictures(model, loader, run_dir, args.split, writer, step, written=written)
            result = evaluation_record(per_image, written_by=PROG, checkpoint=record(ckpt_path, run_dir),
                                       epoch=ckpt.get("epoch"), dataset=data["dataset"], bits=data["bits"],
                                       split=args.split, data_dir=record(data_dir, run_dir), seed=args.seed,
                                       batch_size=args.batch_size, chunk_size=args.chunk_size, device=str(device),
                                       wall_time_s=time.time() - start, pictures=pictures)
            result, earlier = write_evaluation(run_dir, args.split, result)
            for name in ("bpd", "iw_bpd", "active_units"):
                writer.add_scalar(f"eval_{args.split}/{name}", result[name], step)
    except (KeyboardInterrupt, Terminated) as stop:
        name, status = signal_name_and_status(stop)
        done = f"written before the stop: {', '.join(written)}" if written else "nothing was written"
        raise Interrupted(f"stopped by {name}; {target} was not (re)written; {done}", status) from None
    except (MemoryError, RuntimeError) as error:  # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA)
        needed = allocation_failure(error)
        if needed is None:
            raise
        raise out_of_memory(args, len(loader.dataset), needed, written) from None

    print(evaluation_line(result))
    print(f"wrote {run_dir.eval_path(args.split)}" + ("" if earlier is None else (
        f", replacing the earlier one: {replaced_line(earlier)} (kept in the new file under 'replaced')")))
    return result


def parse_args(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="a run folder (its checkpoints/best.pt is used) or a checkpoint .pt file")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder holding FashionMNIST/raw/; None: the checkpoint's data_dir (relative to its "
                             "run folder; an older run's relative one is looked up from the current folder, the "
                             "repo root, then part1/)")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help="None: the checkpoint's; given, it must be the checkpoint's (a check, not a choice)")
    parser.add_argument("--bits", type=int_at_least(min(BITS), max(BITS)), default=None,
                        help="None: the checkpoint's; given, it must be the checkpoint's")
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="split to evaluate (val: the seeded 10%% of the training set held out in training)")
    parser.add_argument("--iw_samples", type=int_at_least(1), default=100,
                        help="K, importance samples per image for the importance-weighted bound")
    parser.add_argument("--batch_size", type=int_at_least(1), default=128, help="images per batch")
    parser.add_argument("--chunk_size", type=int_at_least(1), default=CHUNK_SIZE,
                        help="latents per decoder call (bounds memory; results do not depend on it beyond "
                             "the random draws)")
    parser.add_argument("--seed", type=seed_type, default=0, help="seed of the random draws of z")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to evaluate; auto = CUDA when available")
    return parser.parse_args(argv)


def cli(argv=None):
    run_cli(PROG, main, parse_args(argv))


if __name__ == "__main__":
    cli()
