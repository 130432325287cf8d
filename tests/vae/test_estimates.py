"""Tests of dgmkit/vae/estimates.py: summarize on hand-made per-image values (every figure by hand: means, standard
errors, the gap, per class, the latents' activity), and evaluate_loader's statistics on a model whose latent activity
is set by hand, seeded and leaving the caller's random stream and the model's mode alone."""
import math

import pytest
import torch

from conftest import quantized_images
from dgmkit.data.datasets import CLASSES, DATASETS
from dgmkit.vae.estimates import evaluate_loader, evaluation_line, evaluation_record, replaced_line, summarize
from dgmkit.vae.model import VAE
from hand_maths import BITS, images, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- summarize on hand-made per-image values ------------------------------------------------------------

def per_image_values(n, kl_per_dim=True):
    gen = torch.Generator().manual_seed(n)
    rec = 100 + 10 * torch.rand(n, generator=gen, dtype=torch.float64)
    kl = 5 + torch.rand(n, generator=gen, dtype=torch.float64)
    mean = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return {"nelbo": rec + kl, "rec": rec, "kl": kl, "iw": -(rec + kl - 1.5), "labels": torch.arange(n) % 2,
            "mean": mean, "kl_per_dim": kl.unsqueeze(1).expand(n, 3) / 3 if kl_per_dim else None,
            "dims": 784, "num_samples": 7}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_summarize_by_hand(n):
    values = per_image_values(n)
    summary = summarize(values)
    nelbo = values["nelbo"]
    se = nelbo.std().item() / math.sqrt(n) if n > 1 else None
    assert (summary["num_images"], summary["iw_samples"]) == (n, 7)
    assert summary["nelbo_nats"] == pytest.approx(nelbo.mean().item(), rel=1e-12)
    assert summary["bpd"] == pytest.approx(nelbo.mean().item() / BITS, rel=1e-12)
    assert summary["iw_nats"] == pytest.approx(nelbo.mean().item() - 1.5, rel=1e-12)
    assert summary["iw_bpd"] == pytest.approx((nelbo.mean().item() - 1.5) / BITS, rel=1e-12)
    assert summary["gap_bpd"] == pytest.approx(1.5 / BITS, rel=1e-9)
    assert summary["rec_nats"] == pytest.approx(values["rec"].mean().item(), rel=1e-12)
    assert summary["kl_nats"] == pytest.approx(values["kl"].mean().item(), rel=1e-12)
    if n == 1:
        assert summary["bpd_se"] is summary["nelbo_nats_se"] is summary["iw_bpd_se"] is None
    else:
        assert summary["nelbo_nats_se"] == pytest.approx(se, rel=1e-9)
        assert summary["bpd_se"] == pytest.approx(se / BITS, rel=1e-9)
        assert summary["gap_bpd_se"] == pytest.approx(0.0, abs=1e-9)  # the same gap for every image
    variance = values["mean"].var(dim=0) if n > 1 else torch.zeros(3)  # one image: no spread, nothing active
    latents = summary["latents"]
    assert latents["posterior_mean_var"] == pytest.approx(variance.tolist(), rel=1e-12)
    assert latents["z_dim"] == 3 and summary["active_units"] == int((variance > 0.01).sum())
    assert latents["kl_per_dim"] == pytest.approx([values["kl"].mean().item() / 3] * 3, rel=1e-12)
    counts = [c["count"] for c in summary["per_class"].values()]
    assert counts == [(n + 1) // 2, n // 2] + [0] * 8
    assert summary["per_class"]["T-shirt/top"]["bpd"] == pytest.approx(nelbo[0::2].mean().item() / BITS, rel=1e-12)
    assert summary["per_class"]["Bag"] == {"count": 0, "bpd": None, "bpd_se": None, "iw_bpd": None, "iw_bpd_se": None}


def test_a_unit_is_active_only_strictly_above_the_threshold():
    values = per_image_values(4, kl_per_dim=False)
    variance = values["mean"].var(dim=0)
    at = summarize(values, active_threshold=variance[0].item())
    assert 0 not in at["latents"]["active_dims"] and at["latents"]["active_threshold"] == variance[0].item()
    assert at["latents"]["kl_per_dim"] is None
    below = summarize(values, active_threshold=variance.min().item() / 2)
    assert below["active_units"] == 3 and below["latents"]["active_dims"] == [0, 1, 2]


# ---- evaluate_loader's dataset statistics ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = VAE(num_filters=4, z_dim=3, lr=1e-3)
    with torch.no_grad():  # latent 2's mean is constant (inactive); latents 0 and 1 vary across images
        model.encoder.net[-1].weight[2].zero_()
        model.encoder.net[-1].weight[:2].mul_(200.0)
    return model


def batches(imgs, labels, size):
    return [(imgs[i:i + size], labels[i:i + size]) for i in range(0, len(imgs), size)]


def test_summary_statistics(small_model):
    imgs, labels = quantized_images(320, seed=2)
    small = summarize(evaluate_loader(small_model, batches(imgs[:20], labels[:20], 8), num_samples=2, seed=0))
    per_image = evaluate_loader(small_model, batches(imgs, labels, 64), num_samples=2, seed=0)
    large = summarize(per_image)
    assert (small["num_images"], large["num_images"]) == (20, 320)

    # Standard errors: std / sqrt(N) over images, so 16x the images gives about 1/4 of the SE.
    for prefix, loss in (("nelbo", per_image["nelbo"]), ("iw", -per_image["iw"])):
        bpd = "bpd" if prefix == "nelbo" else "iw_bpd"
        assert large[f"{prefix}_nats_se"] == pytest.approx(loss.std().item() / math.sqrt(320), rel=1e-9)
        assert large[f"{prefix}_nats"] == pytest.approx(loss.mean().item(), rel=1e-12)
        assert large[bpd] == pytest.approx(large[f"{prefix}_nats"] / 784 / math.log(2), rel=1e-12)
        assert large[f"{bpd}_se"] == pytest.approx(large[f"{prefix}_nats_se"] / 784 / math.log(2), rel=1e-12)
        assert large[f"{prefix}_nats_se"] < small[f"{prefix}_nats_se"] / 2
    assert large["nelbo_nats"] == pytest.approx(large["rec_nats"] + large["kl_nats"], rel=1e-12)
    assert large["gap_bpd"] == pytest.approx(large["bpd"] - large["iw_bpd"], rel=1e-9)

    # Per class: the count-weighted average of the class figures is the overall figure.
    per_class = large["per_class"]
    assert list(per_class) == list(CLASSES)
    assert [c["count"] for c in per_class.values()] == torch.bincount(labels, minlength=10).tolist()
    for key in ("bpd", "iw_bpd"):
        weighted = sum(c["count"] * c[key] for c in per_class.values() if c["count"]) / 320
        assert weighted == pytest.approx(large[key], rel=1e-12)

    # Latents: KL per dimension sums to the KL; latent 2's posterior mean never moves.
    latents = large["latents"]
    assert sum(latents["kl_per_dim"]) == pytest.approx(large["kl_nats"], rel=1e-9)
    mean_var = per_image["mean"].var(dim=0)
    assert latents["posterior_mean_var"] == pytest.approx(mean_var.tolist(), rel=1e-9)
    assert latents["posterior_mean_var"][2] < 1e-12 and min(latents["posterior_mean_var"][:2]) > 0.01
    assert large["active_units"] == 2 and latents["active_dims"] == [0, 1] and latents["z_dim"] == 3


def test_evaluation_is_seeded_and_leaves_the_caller_alone(small_model):
    imgs, labels = quantized_images(40, seed=5)
    loader = batches(imgs, labels, 16)
    small_model.train()
    torch.manual_seed(123)
    first = summarize(evaluate_loader(small_model, loader, num_samples=3, chunk_size=10, seed=1))
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # the caller's random stream is untouched
    assert small_model.training  # mode restored
    again = summarize(evaluate_loader(small_model, loader, num_samples=3, chunk_size=10, seed=1))
    assert again["iw_bpd"] == first["iw_bpd"] and again["bpd"] == first["bpd"]  # seeded
    assert (first["num_images"], first["iw_samples"]) == (40, 3)
    assert first["iw_bpd"] == pytest.approx(first["iw_nats"] / 784 / math.log(2))
    assert 0 < first["iw_bpd"] < first["bpd"] < 8


# ---- the record both writers write (train_torch.py's test phase, evaluate.py) ------------------------------------

ABOUT = dict(written_by="evaluate.py", checkpoint="checkpoints/best.pt", epoch=3, dataset="fashion_mnist", bits=4,
             split="test", data_dir="../data", seed=0, batch_size=128, chunk_size=2048, device="cpu", wall_time_s=1.5)


def test_the_record_needs_every_field_and_names_its_data():
    """Issue 25, cause 20: training's eval_test.json lacked dataset and bits (the report then captioned an MNIST
    evaluation as FashionMNIST). Both writers now build the record here, and every field is a required keyword: a
    writer that leaves one out fails at once. per_class is named by the record's own dataset."""
    values = per_image_values(4)
    for name in ABOUT:
        with pytest.raises(TypeError, match=name):
            evaluation_record(values, **{k: v for k, v in ABOUT.items() if k != name})
    record = evaluation_record(values, **{**ABOUT, "dataset": "mnist", "bits": 1})
    assert {k: record[k] for k in ABOUT} == {**ABOUT, "dataset": "mnist", "bits": 1}
    assert record["pictures"] is None  # training's test phase draws none
    assert list(record["per_class"]) == list(DATASETS["mnist"].classes) != list(CLASSES)


def test_the_line_says_which_evaluation_it_is():
    """Issue 25, cause 23: one checkpoint, three test figures, none labelled. The printed line names the checkpoint
    and its epoch, the data, the writer, the seed, batch and chunk its draws depend on, and K; an earlier record's
    headline is described the same way (and an older record without a writer, or a damaged file, as such)."""
    record = evaluation_record(per_image_values(4), **ABOUT)
    line = evaluation_line(record)
    for text in ("test split, 4 images, checkpoints/best.pt (epoch 3), fashion_mnist 4-bit, by evaluate.py, seed 0, "
                 "batch 128, chunk 2048", f"ELBO (one z per image) {record['bpd']:.4f}",
                 f"IW K=7 {record['iw_bpd']:.4f}"):
        assert text in line, (text, line)
    headline = {"written_by": "train_torch.py", "checkpoint": "checkpoints/best.pt", "epoch": 2, "seed": 42,
                "iw_samples": 100, "bpd": 2.65311, "iw_bpd": 2.6}
    assert replaced_line(headline) == ("train_torch.py's evaluation of checkpoints/best.pt (epoch 2), seed 42, "
                                       "K=100: ELBO 2.6531, IW 2.6000 bpd")
    assert replaced_line({"iw_bpd": "1.5"}).startswith("an evaluation by an older version of None")
    assert replaced_line({"iw_bpd": "1.5"}).endswith("IW '1.5' bpd")  # a damaged value never breaks the line
    assert replaced_line({"damaged": "not a JSON object"}) == "a damaged file (not a JSON object)"


# ---- found by mutation testing (tests/mutation/README.md) ----

def test_evaluation_record_lists_each_images_negative_iw_bound_in_bpd():
    """per_image_iw_bpd is -iw / (784 ln 2) per image, in loader order, by hand. Kills `+per_image["iw"]` and
    `(per_image["iw"])` (the sign dropped) in evaluation_record."""
    per_image = {"nelbo": torch.tensor([1100.0, 2100.0], dtype=torch.float64),
                 "rec": torch.tensor([1000.0, 2000.0], dtype=torch.float64),
                 "kl": torch.tensor([100.0, 100.0], dtype=torch.float64),
                 "iw": torch.tensor([-1000.0, -2000.0], dtype=torch.float64), "labels": torch.tensor([0, 1]),
                 "mean": torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64), "kl_per_dim": None,
                 "dims": 784, "num_samples": 5}
    record = evaluation_record(per_image, **{**ABOUT, "checkpoint": "x"})
    expected = [1000.0 / (784 * math.log(2)), 2000.0 / (784 * math.log(2))]
    assert len(record["per_image_iw_bpd"]) == 2
    assert all(abs(a - b) < 1e-12 for a, b in zip(record["per_image_iw_bpd"], expected))
    assert record["checkpoint"] == "x" and abs(record["iw_bpd"] - sum(expected) / 2) < 1e-12


def one_batch():
    return [(images(3, 42), torch.tensor([0, 1, 2]))]


def test_evaluate_loader_defaults_and_no_graph():
    """The defaults: K = 100 importance samples, seed 0 (the same numbers as seed=0, not as seed=1), no progress
    bar; the per-image values hold no autograd graph (the parameters require grad). Kills `num_samples=101` / `99`,
    `seed=1` / `-1` as defaults and the removal of @torch.inference_mode()."""
    model = make_model("none", 0)
    out = evaluate_loader(model, one_batch())
    assert out["num_samples"] == 100 and out["dims"] == 784 and out["iw"].shape == (3,)
    assert torch.equal(out["iw"], evaluate_loader(model, one_batch(), seed=0)["iw"])
    assert not torch.equal(out["iw"], evaluate_loader(model, one_batch(), seed=1)["iw"])
    assert all(not out[key].requires_grad for key in ("nelbo", "rec", "kl", "iw", "mean"))


def test_evaluate_loader_shows_its_bar_only_when_asked(capsys):
    """progress=True: the "evaluating (K=2)" bar on stderr (not a terminal here); progress=False and the default:
    none. Kills `progress is not None` / `not progress is None` (True: only on a terminal), `else progress` (the
    flag inverted), `progress=True` as the default, and `leave=True` (the finished bar left on stderr)."""
    model = make_model("none", 0)
    evaluate_loader(model, one_batch(), num_samples=2, progress=True)
    err = capsys.readouterr().err
    assert "evaluating (K=2)" in err
    assert err.endswith("\r") and "\n" not in err  # the bar is erased when the split is done (leave=False)
    evaluate_loader(model, one_batch(), num_samples=2, progress=False)
    evaluate_loader(model, one_batch(), num_samples=2)
    assert "evaluating" not in capsys.readouterr().err
