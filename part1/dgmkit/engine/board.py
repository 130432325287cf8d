"""What a run shows in TensorBoard, all in the run's own event file (one run in TensorBoard's list per run folder).

Time Series (the tab TensorBoard opens on) sorts tag groups alphabetically, so a person sees first:
    bpd/          train and validation bpd (bits per dimension; the VAE's negative ELBO), side by side
    <terms>/      the family's other statistics: elbo_terms/ (VAE: rec_nats, kl_nats), flow_terms/ (RealNVP),
                  gan/ (the GAN, which has no bpd: its losses and D(x), D(G(z)) come first)
then final/ (the metrics.json figures the HParams tab compares), objective/ (the loss minimised, in bpd),
the images and time/. Custom Scalars: train and validation bpd on one chart, the terms on more (a Board's layout).
HParams: the run's settings and final/ metrics, written into the run itself (torch's summary.hparams; not
SummaryWriter.add_hparams, which makes a second run <run>/hparams with one-point charts of its own).
"""
import dataclasses

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries


def final_tag(name):
    """The tag of a metrics.json figure: final/<its key>."""
    return f"final/{name}"


def lines(*tags):
    """A custom-scalars chart of these tags (regexes, anchored: bpd/train is not bpd/train_x)."""
    return ["Multiline", [f"^{tag}$" for tag in tags]]


@dataclasses.dataclass(frozen=True)
class Board:
    """One family's TensorBoard: the group of its non-bpd statistics, its custom-scalars layout, and the settings
    and metrics its HParams entry shows."""
    terms: str
    layout: dict
    hparams: tuple
    hparam_metrics: tuple

    def epoch_tag(self, split, name):
        """The tag of an epoch statistic (history.jsonl's f"{split}_{name}"): bpd/<split>, objective/bpd_<split>,
        <terms>/<name>_<split>. The objective has a group of its own, so that the first two cards are train
        and validation bpd."""
        if name == "bpd":
            return f"bpd/{split}"
        if name == "objective_bpd":
            return f"objective/bpd_{split}"
        return f"{self.terms}/{name}_{split}"

    def open_writer(self, run_dir, resume_at=None):
        """The run's SummaryWriter. A new run gets the custom-scalars layout; a resumed one (resume_at: its first
        epoch) purges the points an interrupted session logged after its last checkpoint."""
        writer = SummaryWriter(str(run_dir), purge_step=resume_at)
        if resume_at is None:
            writer.add_custom_scalars(self.layout)
        return writer

    def log_epoch(self, writer, epoch, stats, seconds):
        """One epoch's statistics, {split: {name: value}}, and its duration."""
        for split, values in stats.items():
            for name, value in values.items():
                writer.add_scalar(self.epoch_tag(split, name), value, epoch)
        writer.add_scalar("time/epoch_seconds", seconds, epoch)

    def log_final(self, writer, settings, metrics, step):
        """The test results (metrics.json's figures, as final/<key> at `step`) and the HParams entry of the
        run: its settings (self.hparams and what `auto` chose) against self.hparam_metrics."""
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    name.startswith("test_") or name in self.hparam_metrics):
                writer.add_scalar(final_tag(name), value, step)
        hparams = {name: settings[name] for name in self.hparams}
        choices = settings.get("auto_choices") or {}
        hparams.update(precision=choices.get("precision", settings.get("precision")),
                       compile=bool(choices.get("compile", False)))
        shown = {final_tag(k): metrics[k] for k in self.hparam_metrics if metrics.get(k) is not None}
        for summary in hparams_summaries(hparams, shown):  # experiment, session start, session end
            writer.file_writer.add_summary(summary, step)
        writer.flush()
