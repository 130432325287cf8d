"""Tests of dgmkit/engine/epoch.py: train_epoch (through the VAE's train_vae) clips the global gradient norm and names
the first non-finite step, at once or after the epoch (the GPU's deferred check) with the same step either way;
autocast is bf16 exactly for bf16; CompiledOrEager falls back to eager in one warning line with the same noise."""
import copy
import math

import pytest
import torch

from dgmkit.engine import epoch
from dgmkit.engine.epoch import CompiledOrEager, autocast
from dgmkit.errors import NonFiniteLossError
from dgmkit.vae.bounds import objective
from dgmkit.vae.model import VAE
from dgmkit.vae.training import train_vae
from hand_maths import images, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def max_difference(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_train_vae_clips_the_global_gradient_norm():
    model = make_model("none", 0)
    imgs = images(2, 10)
    trained = copy.deepcopy(model)
    torch.manual_seed(13)
    train_vae(trained, [(imgs, None)], torch.optim.SGD(trained.parameters(), lr=1.0), grad_clip=1e-3)
    step = torch.cat([(p - q).flatten() for p, q in zip(trained.parameters(), model.parameters())])
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-3)  # the raw gradient is far longer
    trained = copy.deepcopy(model)
    torch.manual_seed(13)
    train_vae(trained, [(imgs, None)], torch.optim.SGD(trained.parameters(), lr=1.0))
    step = torch.cat([(p - q).flatten() for p, q in zip(trained.parameters(), model.parameters())])
    assert step.norm().item() > 0.1


@pytest.mark.parametrize("bad", [(2, 4), (1, 3)])
@pytest.mark.parametrize("check_every_step, stop", [(True, True), (None, True), (False, False)])
def test_train_vae_names_the_first_non_finite_step(check_every_step, stop, bad):
    """Two steps log an Inf KL (their loss stays finite): the error names the first, at once when checking
    every step (the default on the CPU), else after the epoch; the weights are stepped only before it."""
    model = make_model("none", 0)
    seen = []

    def loss_fn(imgs):
        seen.append(1)
        terms = objective(model, imgs)
        if len(seen) in bad:
            terms["kl_nats"] = terms["kl_nats"].detach() * math.inf
        return terms
    batches = [(images(2, 20 + i), None) for i in range(4)]
    before = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(15)
    with pytest.raises(NonFiniteLossError, match=rf"^training, step {bad[0]}$") as info:
        train_vae(model, batches, optimizer, check_every_step=check_every_step, loss_fn=loss_fn)
    assert info.value.step == bad[0] and info.value.where == "training" and len(seen) == (bad[0] if stop else 4)
    if bad[0] == 1 and stop:
        assert max_difference(model, before) == 0  # stopped before any step
    elif stop:  # only step 1 was taken: one SGD step on batch 1 from `before` gives the same weights
        reference = copy.deepcopy(before)
        torch.manual_seed(15)
        objective(reference, batches[0][0])["objective_bpd"].backward()
        torch.optim.SGD(reference.parameters(), lr=0.1).step()
        assert max_difference(model, reference) < 1e-6


def test_deferred_nan_check_reports_the_same_step(monkeypatch):
    """The GPU path checks for a NaN loss once per epoch (no per-step sync) but names the same step."""
    model = VAE(num_filters=4, z_dim=2, lr=1e-3)
    optimizer = torch.optim.Adam(model.parameters())
    batches = [(torch.randint(0, 16, (4, 1, 28, 28)), torch.zeros(4)) for _ in range(6)]
    forward = VAE.forward
    calls = {"n": 0}

    def poisoned(self, imgs):
        calls["n"] += 1
        L_rec, L_reg, bpd = forward(self, imgs)
        return (L_rec, L_reg, bpd * math.inf) if calls["n"] in (4, 6) else (L_rec, L_reg, bpd)

    monkeypatch.setattr(VAE, "forward", poisoned)
    for every_step, expected_calls in ((True, 4), (False, 6)):
        calls["n"] = 0
        with pytest.raises(NonFiniteLossError, match="training, step 4$"):
            train_vae(model, batches, optimizer, check_every_step=every_step)
        assert calls["n"] == expected_calls  # per step: stops at once; deferred: finishes the epoch


def test_autocast_is_bf16_exactly_for_bf16():
    """--precision bf16 (a string built at run time, as argparse gives it) turns bf16 autocast on; fp32 leaves it off."""
    for precision, on in (("".join(["bf", "16"]), True), ("fp32", False)):
        with autocast(torch.device("cpu"), precision):
            assert torch.is_autocast_enabled("cpu") is on
            assert not on or torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_a_compile_failure_is_one_line_and_training_goes_on(monkeypatch, capsys):
    def broken_compile(fn, mode=None):
        def compiled(*args):
            raise RuntimeError("InductorError: no working C++ compiler\nlong details")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3)
    imgs = torch.randint(0, 16, (3, 1, 28, 28))
    step = CompiledOrEager(lambda x: objective(model, x))
    torch.manual_seed(1)
    terms = step(imgs)
    torch.manual_seed(1)
    eager = objective(model, imgs)
    assert torch.equal(terms["loss"], eager["loss"])  # the retry drew the same noise as an eager call
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "torch.compile failed (InductorError: no working C++ compiler)" in err[0]
    step(imgs)  # later calls go straight to eager: no second warning
    assert capsys.readouterr().err == ""


# ---- CompiledOrEager's fallback, found by mutation testing (tests/mutation/README.md) ----

def noisy(x):
    """The step being compiled: x plus fresh noise from the global CPU RNG."""
    return x + torch.rand(3)


def fake_compile(fail_on_calls, first_line="InductorError: no working C++ compiler"):
    """A torch.compile whose compiled function runs fn on the calls not in fail_on_calls (1-based) and, on those,
    draws noise (as a failing compilation may) and raises RuntimeError(first_line + more lines)."""
    def compile_(fn, mode=None):
        calls = {"n": 0}

        def compiled(*args):
            calls["n"] += 1
            if calls["n"] in fail_on_calls:
                torch.rand(5)  # the failed attempt consumes noise
                raise RuntimeError(f"{first_line}\nlong details")
            return fn(*args)
        return compiled
    return compile_


def test_a_first_call_failure_after_drawing_noise_retries_with_the_callers_noise(monkeypatch, capsys):
    """A compilation that fails on the first call after drawing noise: the eager retry draws what an eager call from
    the same RNG state draws, and the stream goes on from there. Kills every mutant that does not save the RNG state
    on the first call or does not restore it: `self.calls != 0`, `< 0`, `> 0`, `== 1`, `== -1`,
    `not self.calls == 0`, `self.calls = 1` / `-1` at construction, `if state is None`, `if not state is not None`."""
    monkeypatch.setattr(torch, "compile", fake_compile({1}))
    x = torch.zeros(3)
    step = epoch.CompiledOrEager(noisy)
    torch.manual_seed(1)
    retried, after = step(x), torch.rand(2)
    torch.manual_seed(1)
    eager, eager_after = noisy(x), torch.rand(2)
    assert torch.equal(retried, eager) and torch.equal(after, eager_after)
    assert "torch.compile failed (InductorError: no working C++ compiler)" in capsys.readouterr().err


def test_the_warning_quotes_at_most_160_characters_of_the_errors_first_line(monkeypatch, capsys):
    """A 200-character first line is cut to its first 160 characters in the one-line warning. Kills `[:161]` and
    `[:159]`."""
    line = "".join(chr(ord("a") + k % 26) for k in range(200))
    monkeypatch.setattr(torch, "compile", fake_compile({1}, first_line=line))
    epoch.CompiledOrEager(noisy)(torch.zeros(3))
    (warning,) = [text for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert f"torch.compile failed ({line[:160]}); continuing without compilation" in warning


def test_a_later_failure_does_not_rewind_the_noise(monkeypatch):
    """Pins the documented trade-off "a failure on the first call restores the CPU random state": the state
    is saved on the first call only, not on every step): a compilation that works on call 1 and fails on call 2
    after drawing noise; the eager retry of call 2 draws the numbers after the failed attempt's. Kills
    `self.calls >= 0` and `self.calls += 0` (the state saved, and restored, on every call)."""
    monkeypatch.setattr(torch, "compile", fake_compile({2}))
    x = torch.zeros(3)
    step = epoch.CompiledOrEager(noisy)
    torch.manual_seed(2)
    first, second = step(x), step(x)
    torch.manual_seed(2)
    expected_first = x + torch.rand(3)
    torch.rand(5)  # what the failed attempt drew
    expected_second = x + torch.rand(3)
    assert torch.equal(first, expected_first) and torch.equal(second, expected_second)
