"""dgmkit/vae/family.py: --grad_clip reaches the VAE's steps, and the last line names the importance-weighted bound
only when the test phase computed it (what the family's TensorBoard shows: tests/engine/test_board.py)."""
import torch

from conftest import SMALL
from dgmkit.vae import family
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
    assert family.summary({"test_bpd": 3.14159, "best_epoch": 2}) == "test bpd 3.1416 (best epoch 2)"
    assert family.summary({"test_bpd": 3.14159, "test_iw_bpd": 3.0999, "iw_samples": 100, "best_epoch": 2}) == (
        "test bpd 3.1416 | importance-weighted (K=100) 3.0999 (best epoch 2)")


def test_the_hparams_are_settings():
    """Every HParams column is a setting of the VAE (a key of args.json), and the VAE's board shows them."""
    assert set(family.HPARAMS) <= set(TrainConfig.defaults())
    assert family.VAE_BOARD.hparams == family.HPARAMS and family.VAE_BOARD.hparam_metrics == family.HPARAM_METRICS
