"""dgmkit/vae/family.py: --grad_clip reaches the VAE's steps, the last line names the importance-weighted bound
only when the test phase computed it and says which figure is which, and the test phase's eval_test.json is the record
evaluate.py writes (what the family's TensorBoard shows: tests/engine/test_board.py)."""
import json

import torch

from conftest import SMALL, only_run_dir
from dgmkit.data.datasets import DATASETS
from dgmkit.vae import family
from dgmkit.vae.estimates import evaluation_record
from dgmkit.vae.config import TrainConfig
from train_torch import main, parse_args


def test_grad_clip_is_applied(tiny_data, tmp_path, monkeypatch):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: norms.append(max_norm) or
                        clip(params, max_norm))
    main(parse_args(["--data_dir", str(tiny_data), "--log_dir", str(tmp_path), *SMALL, "--grad_clip", "0.5"]))
    assert norms == [0.5] * 10  # 5 steps per epoch, 2 epochs


def test_the_last_line_names_the_iw_bound_only_when_computed():
    """Issue 25, cause 23: the test bpd is training's own ELBO pass (another draw of z than eval_test.json's ELBO),
    and the importance-weighted figure is eval_test.json's, with its K: the line says so."""
    own = "test bpd 3.1416 (negative ELBO, training's own pass: one z per image)"
    assert family.summary({"test_bpd": 3.14159, "best_epoch": 2}) == f"{own} (best epoch 2)"
    assert family.summary({"test_bpd": 3.14159, "test_iw_bpd": 3.0999, "iw_samples": 100, "best_epoch": 2}) == (
        f"{own} | importance-weighted (K=100, eval_test.json) 3.0999 (best epoch 2)")


def test_the_test_phase_writes_the_record_evaluate_writes(mnist_8bit, tmp_path, capsys):
    """Issue 25, cause 20: training's eval_test.json lacked `dataset` and `bits`, so the report captioned an MNIST
    evaluation as the FashionMNIST subset. The test phase builds it with evaluate.py's builder: the same fields, its
    own data (here 1-bit MNIST, per_class named by digits), who wrote it and what its draws depend on; the line it
    prints says so."""
    main(parse_args(["--data_dir", str(mnist_8bit), "--log_dir", str(tmp_path), *SMALL, "--dataset", "mnist",
                     "--bits", "1", "--final_iw_samples", "2", "--eval_batch_size", "16"]))
    record = json.loads((only_run_dir(tmp_path) / "eval_test.json").read_text())
    about = dict(written_by="train_torch.py", checkpoint="checkpoints/best.pt", epoch=record["epoch"],
                 dataset="mnist", bits=1, split="test", data_dir=record["data_dir"], seed=42, batch_size=16,
                 chunk_size=2048, device="cpu", wall_time_s=record["wall_time_s"], pictures=None)
    assert {k: record[k] for k in about} == about
    per_image = {"nelbo": torch.ones(2, dtype=torch.float64), "rec": torch.ones(2, dtype=torch.float64),
                 "kl": torch.zeros(2, dtype=torch.float64), "iw": -torch.ones(2, dtype=torch.float64),
                 "labels": torch.tensor([0, 1]), "mean": torch.zeros(2, 2, dtype=torch.float64), "kl_per_dim": None,
                 "dims": 784, "num_samples": 2}
    assert set(record) == set(evaluation_record(per_image, **about))
    assert list(record["per_class"]) == list(DATASETS["mnist"].classes)
    out = capsys.readouterr().out
    assert (f"wrote eval_test.json: test split, 20 images, checkpoints/best.pt (epoch {record['epoch']}), mnist 1-bit, "
            "by train_torch.py, seed 42, batch 16, chunk 2048") in out


def test_the_hparams_are_settings():
    """Every HParams column is a setting of the VAE (a key of args.json), and the VAE's board shows them."""
    assert set(family.HPARAMS) <= set(TrainConfig.defaults())
    assert family.VAE_BOARD.hparams == family.HPARAMS and family.VAE_BOARD.hparam_metrics == family.HPARAM_METRICS
