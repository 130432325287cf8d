"""What a run shows in TensorBoard, all in the run's own event file (one run in TensorBoard's list per run folder).

Time Series (the tab TensorBoard opens on) sorts tag groups alphabetically, so a person sees first:
    bpd/          train and validation bpd (the negative ELBO, bits per dimension), side by side
    elbo_terms/   rec_nats (-log p(x|z)) and kl_nats (the KL term), nats per image, train and validation
then final/ (the metrics.json figures the HParams tab compares), the manifold, objective/ (the loss
minimised, in bpd), the sample grids and time/.
Custom Scalars: train and validation bpd on one chart, the ELBO terms on two more (LAYOUT).
HParams: the run's settings and final/ metrics, written into the run itself (torch's summary.hparams; not
SummaryWriter.add_hparams, which makes a second run <run>/hparams with one-point charts of its own).
"""
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

# The settings and metrics.json figures that the HParams tab shows; a sweep's runs are compared there.
HPARAMS = ("dataset", "bits", "objective", "train_samples", "flow", "flow_length", "z_dim", "num_filters", "lr",
           "batch_size", "epochs", "seed")
HPARAM_METRICS = ("test_bpd", "test_iw_bpd", "best_val_bpd", "test_kl_nats", "test_active_units", "seconds_per_epoch")


def epoch_tag(split, name):
    """The tag of an epoch statistic (history.jsonl's f"{split}_{name}"): bpd/<split>, objective/bpd_<split>,
    elbo_terms/<name>_<split>. The objective has a group of its own, so that the first two cards are train and
    validation bpd."""
    if name == "bpd":
        return f"bpd/{split}"
    if name == "objective_bpd":
        return f"objective/bpd_{split}"
    return f"elbo_terms/{name}_{split}"


def final_tag(name):
    """The tag of a metrics.json figure: final/<its key>."""
    return f"final/{name}"


def _lines(*tags):
    return ["Multiline", [f"^{tag}$" for tag in tags]]  # regexes, anchored: bpd/train is not bpd/train_objective


LAYOUT = {
    "bits per dimension (negative ELBO; lower is better)": {
        "train and validation bpd": _lines("bpd/train", "bpd/val"),
        "training objective and ELBO (bpd; equal for the ELBO with K = 1)": _lines("objective/bpd_train", "bpd/train"),
    },
    "ELBO terms (nats per image)": {
        "reconstruction -log p(x|z)": _lines("elbo_terms/rec_nats_train", "elbo_terms/rec_nats_val"),
        "KL(q(z|x) || p(z))": _lines("elbo_terms/kl_nats_train", "elbo_terms/kl_nats_val"),
    },
}


def open_writer(run_dir, resume_at=None):
    """The run's SummaryWriter. A new run gets the custom-scalars layout; a resumed one (resume_at: its first
    epoch) purges the points an interrupted session logged after its last checkpoint."""
    writer = SummaryWriter(str(run_dir), purge_step=resume_at)
    if resume_at is None:
        writer.add_custom_scalars(LAYOUT)
    return writer


def log_epoch(writer, epoch, stats, seconds):
    """One epoch's statistics, {split: {name: value}}, and its duration."""
    for split, values in stats.items():
        for name, value in values.items():
            writer.add_scalar(epoch_tag(split, name), value, epoch)
    writer.add_scalar("time/epoch_seconds", seconds, epoch)


def log_final(writer, settings, metrics, step):
    """The test results (metrics.json's figures, as final/<key> at `step`, the best epoch) and the HParams entry
    of the run: its settings (HPARAMS and what `auto` chose) against HPARAM_METRICS."""
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                name.startswith("test_") or name in HPARAM_METRICS):
            writer.add_scalar(final_tag(name), value, step)
    hparams = {name: settings[name] for name in HPARAMS}
    choices = settings.get("auto_choices") or {}
    hparams.update(precision=choices.get("precision", settings.get("precision")),
                   compile=bool(choices.get("compile", False)))
    shown = {final_tag(k): metrics[k] for k in HPARAM_METRICS if metrics.get(k) is not None}
    for summary in hparams_summaries(hparams, shown):  # experiment, session start, session end
        writer.file_writer.add_summary(summary, step)
    writer.flush()
