"""What evaluate.py does besides the estimates (estimates.py): a train_torch.py checkpoint's VAE rebuilt and checked,
its pictures (originals over reconstructions, latent interpolations between pairs of images), the writing of an
eval_<split>.json that never replaces an earlier one silently (also for training's test phase).
"""
import torch
import torchvision

from dgmkit.contexts import eval_mode
from dgmkit.errors import UserError, allocation_failure, first_line
from dgmkit.runs.checkpoints import CheckpointError, load_checkpoint
from dgmkit.vae.config import TrainConfig
from dgmkit.vae.model import VAE
from utils import decoder_mean_image


def load_model(path, device):
    """Read a train_torch.py checkpoint safely (weights_only) and rebuild its VAE (its family: z_dim,
    num_filters, flow, flow_length) on `device`, in eval mode. Returns (model, checkpoint dict)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a run folder holding checkpoints/best.pt, "
                              "or a .pt file written by train_torch.py)")
    ckpt = load_checkpoint(path)
    TrainConfig.check_saved(ckpt["args"], f"{path}, args")
    epoch = ckpt.get("epoch")  # the step of the TensorBoard entries and the record's epoch
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise CheckpointError(f"{path}: its 'epoch' is {str(epoch)[:40]!r}, not a whole number of epochs; the "
                              "checkpoint is damaged")
    args = ckpt["args"]
    try:
        model = VAE(int(args["num_filters"]), int(args["z_dim"]), float(args.get("lr", 1e-3)),
                    args.get("flow", "none"), int(args.get("flow_length", 0)), 2 ** int(args.get("bits", 4)))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, MemoryError) as error:
        needed = allocation_failure(error)
        if needed:
            raise CheckpointError(f"the model of {path} (z_dim {args['z_dim']}, num_filters {args['num_filters']}) "
                                  f"does not fit in memory ({needed})") from None
        raise CheckpointError(f"checkpoint {path} does not match the VAE of train_torch.py: "
                              f"{first_line(error)}") from None
    return model.to(device).eval(), ckpt


@torch.inference_mode()
def reconstruction_grid(model, imgs):
    """Originals (top row) over their reconstructions (bottom row): decoder mean at z = posterior mean.

    Args:
        imgs: [N, 1, 28, 28] long levels 0..L-1.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), N columns, 2 rows.
    """
    mean, _ = model.encoder(imgs)  # [N, D]
    recon = decoder_mean_image(model.decoder(mean))  # [N, 1, 28, 28] in [0, 1]
    both = torch.cat([imgs.float() / (model.levels - 1), recon]).cpu()  # [2N, 1, 28, 28]
    return torchvision.utils.make_grid(both, nrow=len(imgs)).clamp(0, 1)


@torch.inference_mode()
def interpolation_grid(model, first, second, steps=10):
    """Latent interpolations: one row per pair, [x_a, `steps` decoder means, x_b].

    z_t = (1 - t) mu_a + t mu_b for t = 0, 1/(steps-1), ..., 1, mu the posterior means.
    Args:
        first, second: [P, 1, 28, 28] long levels 0..L-1, the two ends of P pairs.
    Returns:
        [3, H, W] float grid in [0, 1] (CPU), P rows of steps + 2 images.
    """
    mu_a, _ = model.encoder(first)  # [P, D]
    mu_b, _ = model.encoder(second)  # [P, D]
    t = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)  # [1, S, 1]
    z = (1 - t) * mu_a.unsqueeze(1) + t * mu_b.unsqueeze(1)  # [P, S, D]
    decoded = decoder_mean_image(model.decoder(z.flatten(0, 1)))  # [P*S, 1, 28, 28]
    decoded = decoded.view(len(first), steps, *decoded.shape[1:])  # [P, S, 1, 28, 28]
    top = model.levels - 1
    rows = torch.cat([first.float().unsqueeze(1) / top, decoded, second.float().unsqueeze(1) / top], dim=1)  # [P, S+2, 1, 28, 28]
    return torchvision.utils.make_grid(rows.flatten(0, 1).cpu(), nrow=steps + 2).clamp(0, 1)


def first_images(loader, count):
    """The first `count` images of a loader (fewer if it is smaller): [n, 1, 28, 28] long."""
    taken, total = [], 0
    for imgs, _ in loader:
        taken.append(imgs)
        total += len(imgs)
        if total >= count:
            break
    return torch.cat(taken)[:count]


def save_pictures(model, loader, run_dir, split, writer=None, step=0, count=8, steps=10, written=None):
    """Write reconstructions_<split>.png and interpolations_<split>.png into run_dir (and TensorBoard).

    Uses the first 2 * count images of the split: images 0..count-1 for the reconstructions,
    pairs (i, count + i) for the interpolations (fewer on a smaller split). Returns
    {"reconstructions": file name, "interpolations": file name}; each name is also appended to `written`
    (a list) as soon as its file is complete.
    """
    with eval_mode(model):
        imgs = first_images(loader, 2 * count).to(model.device)  # [<=2*count, 1, 28, 28]
        grids = {"reconstructions": reconstruction_grid(model, imgs[:count])}
        pairs = min(count, len(imgs) // 2)
        if pairs > 0:
            grids["interpolations"] = interpolation_grid(model, imgs[:pairs], imgs[pairs:2 * pairs], steps)
    names = {}
    for kind, grid in grids.items():
        run_dir.save_picture(kind, split, grid)
        names[kind] = run_dir.picture_path(kind, split).name
        if written is not None:
            written.append(names[kind])
        if writer is not None:
            writer.add_image(f"eval_{split}/{kind}", grid, step)
    return names


# ---- eval_<split>.json -----------------------------------------------------------------------------------------

# The headline of an earlier eval_<split>.json that a new one keeps under "replaced" (part1/README.md).
REPLACED_KEYS = ("written_by", "checkpoint", "epoch", "dataset", "bits", "split", "seed", "batch_size", "chunk_size",
                 "num_images", "iw_samples", "bpd", "bpd_se", "iw_bpd", "iw_bpd_se", "wall_time_s")


def write_evaluation(run_dir, split, record):
    """Write `record` (estimates.evaluation_record) as run_dir's eval_<split>.json, never replacing an earlier one
    silently: the new file keeps, under "replaced", the headline (REPLACED_KEYS) of every evaluation it replaced,
    oldest first (of an earlier file that is not a JSON object: {"damaged": why}). The same evaluation again (every
    headline field equal but the wall time: a resumed test phase, a rerun with the same flags) replaces nothing.
    Returns the written record and the replaced one's headline (None when nothing was replaced), for the writer's
    line (estimates.replaced_line)."""
    try:
        earlier = run_dir.read_eval(split)
    except UserError:  # not JSON, or not an object: it is replaced, and the line says it was damaged
        earlier = {"damaged": "not a JSON object"}
    headline = None
    if earlier is not None:
        chain = earlier.get("replaced")
        chain = [entry for entry in chain if isinstance(entry, dict)] if isinstance(chain, list) else []
        headline = {key: earlier[key] for key in (*REPLACED_KEYS, "damaged") if key in earlier}
        if _without_time(headline) == _without_time(record):
            headline = None
        record = {**record, "replaced": chain + ([headline] if headline else [])} if chain or headline else record
    run_dir.write_eval(split, record)
    return record, headline


def _without_time(record):
    return {key: record.get(key) for key in REPLACED_KEYS if key != "wall_time_s"} | {"damaged": record.get("damaged")}
