"""The VAE as a model family of the training engine (engine/loop.py's fit): its build (model, Adam, one epoch of
train_vae), validation (test_vae), sample grid, test phase (the ELBO, the importance-weighted bound and, for
z_dim 2, the manifold), its last line and its TensorBoard.
"""
import time

from dgmkit.engine.board import Board, lines
from dgmkit.engine.loop import Family
from dgmkit.runs import paths
from dgmkit.vae.config import TRAIN_SCRIPT
from dgmkit.vae.estimates import CHUNK_SIZE, evaluate_loader, evaluation_line, evaluation_record, replaced_line
from dgmkit.vae.evaluation import write_evaluation
from dgmkit.vae.training import build_model, sample_grid, test_vae, train_vae
from utils import visualize_manifold

# The VAE's settings and metrics.json figures that the HParams tab shows; a sweep's runs are compared there.
HPARAMS = ("dataset", "bits", "objective", "train_samples", "flow", "flow_length", "z_dim", "num_filters", "lr",
           "batch_size", "epochs", "seed")
HPARAM_METRICS = ("test_bpd", "test_iw_bpd", "best_val_bpd", "test_kl_nats", "test_active_units", "seconds_per_epoch")


def build(config, device, choice):
    """The VAE, its Adam optimizer, and one epoch of training on its objective (train_vae)."""
    model, optimizer, loss_fn = build_model(config, device, choice)

    def train_epoch(batches):
        return train_vae(model, batches, optimizer, choice["precision"], config.grad_clip, loss_fn=loss_fn)
    return model, optimizer, train_epoch


def test_phase(run, model, writer, best_epoch):
    """Test the best-by-validation model (the untrained one when no epoch ran): the ELBO, the importance-
    weighted bound (Burda et al. 2016) with --final_iw_samples into eval_test.json (the record evaluate.py writes,
    by the same builder; its line says what an earlier one held), and the manifold of a z_dim 2 model."""
    config, run_dir, test_loader = run.config, run.dir, run.loaders[2]
    if best_epoch > 0:
        model.load_state_dict(run_dir.load_checkpoint("best", map_location=run.device)["model"])
    metrics = {f"test_{name}": value for name, value in test_vae(model, test_loader).items()}
    if config.final_iw_samples:
        start = time.time()
        per_image = evaluate_loader(model, test_loader, config.final_iw_samples, CHUNK_SIZE, seed=config.seed,
                                    progress=config.progress_bar)
        record = evaluation_record(per_image, written_by=TRAIN_SCRIPT.name, checkpoint=paths.record(
            run_dir.checkpoint("best"), run_dir), epoch=best_epoch, dataset=config.dataset, bits=config.bits,
            split="test", data_dir=paths.record(config.data_dir, run_dir), seed=config.seed,
            batch_size=config.eval_batch_size or config.batch_size, chunk_size=CHUNK_SIZE, device=str(run.device),
            wall_time_s=time.time() - start)
        record, earlier = write_evaluation(run_dir, "test", record)
        print(f"wrote {run_dir.eval_path('test').name}: {evaluation_line(record)}" + ("" if earlier is None else
              f" | replaced the earlier one: {replaced_line(earlier)} (kept in it under 'replaced')"))
        metrics.update(test_iw_bpd=record["iw_bpd"], test_iw_bpd_se=record["iw_bpd_se"],
                       test_active_units=record["active_units"], iw_samples=config.final_iw_samples)
    if config.z_dim == 2:
        manifold = visualize_manifold(model.decoder, grid_size=20)  # [3, H, W]
        run_dir.save_manifold(manifold)
        writer.add_image("manifold", manifold, best_epoch)
    return metrics


def summary(metrics):
    """The last line: the test bpd of training's own ELBO pass (one z per image from the run's random stream, so
    another draw than eval_test.json's ELBO) and the importance-weighted bound of eval_test.json."""
    iw = (f" | importance-weighted (K={metrics['iw_samples']}, eval_test.json) {metrics['test_iw_bpd']:.4f}"
          if "test_iw_bpd" in metrics else "")
    return (f"test bpd {metrics['test_bpd']:.4f} (negative ELBO, training's own pass: one z per image){iw} "
            f"(best epoch {metrics['best_epoch']})")


def grid(model, config):
    """The 8x8 sample grid of the report's schedule (training.sample_grid)."""
    return sample_grid(model)


VAE_BOARD = Board("elbo_terms", {
    "bits per dimension (negative ELBO; lower is better)": {
        "train and validation bpd": lines("bpd/train", "bpd/val"),
        "training objective and ELBO (bpd; equal for the ELBO with K = 1)": lines("objective/bpd_train", "bpd/train"),
    },
    "ELBO terms (nats per image)": {
        "reconstruction -log p(x|z)": lines("elbo_terms/rec_nats_train", "elbo_terms/rec_nats_val"),
        "KL(q(z|x) || p(z))": lines("elbo_terms/kl_nats_train", "elbo_terms/kl_nats_val"),
    },
}, HPARAMS, HPARAM_METRICS)
VAE_FAMILY = Family(script=TRAIN_SCRIPT, build=build, validate=test_vae, sample_grid=grid, test=test_phase,
                    shown=("bpd",), summary=summary, board=VAE_BOARD)
