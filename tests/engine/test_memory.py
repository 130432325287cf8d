"""dgmkit/engine/memory.py: the memory check every family's build runs (issue 25, cause 10): parameters counted on
the meta device (nothing allocated, no random draw), the depth flags interpolated exactly from depths 1 and 2, a
tensor beyond 64-bit sizes, and the one-line refusal naming the family's size flags. The builds that call it, typed
and from a checkpoint: tests/end_to_end/test_hardening3_inputs.py."""
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from dgmkit.engine import memory
from dgmkit.errors import UserError
from dgmkit.gan import family as gan_family
from dgmkit.gan.model import GAN
from dgmkit.realnvp import family as realnvp_family
from dgmkit.realnvp.family import make_model
from dgmkit.vae import training
from dgmkit.vae.model import VAE

CPU = torch.device("cpu")


def flow(hidden_channels=4, num_blocks=2, couplings=3, num_scales=2, bits=8):
    return SimpleNamespace(hidden_channels=hidden_channels, num_blocks=num_blocks, couplings=couplings,
                           num_scales=num_scales, bits=bits)


def built(model):
    return sum(p.numel() for p in model.parameters())


def test_a_model_is_counted_without_allocating_or_drawing():
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    gan, vae = memory.parameter_count(lambda: GAN(100, 256)), memory.parameter_count(lambda: VAE(32, 20, 0.0))
    assert torch.equal(rng, torch.get_rng_state())  # the run's random stream is untouched (pinned runs stay equal)
    assert gan == built(GAN(100, 256)) == 2_043_537 and vae == built(VAE(32, 20, 0.0))


@pytest.mark.parametrize("num_blocks, couplings, num_scales", [(1, 1, 2), (2, 3, 2), (5, 4, 2), (3, 7, 1)])
def test_depths_interpolated_from_1_and_2_give_the_exact_count(num_blocks, couplings, num_scales):
    """Each residual block and coupling adds the same parameters: the count from depths 1 and 2 is the built one."""
    config = flow(num_blocks=num_blocks, couplings=couplings, num_scales=num_scales)
    counted = memory.parameter_count(lambda **depths: make_model(config, **depths),
                                     {"num_blocks": num_blocks, "couplings": couplings})
    assert counted == built(make_model(config))


def test_multilinear_interpolation_by_hand():
    """f(a, b) = 5 + 2a + 3b + 7ab parameters, as a model of Linear layers: counted at the corners 1 and 2 only."""
    calls = []

    def make(a, b):
        calls.append((a, b))
        return nn.ParameterList([nn.Parameter(torch.empty(n)) for n in (5, 2 * a, 3 * b, 7 * a * b)])
    assert memory.parameter_count(make, {"a": 10 ** 6, "b": 4}) == 5 + 2 * 10 ** 6 + 12 + 7 * 4 * 10 ** 6
    assert sorted(calls) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_a_deep_flow_is_counted_at_once():
    start = time.time()
    config = flow(num_blocks=10 ** 9, couplings=10 ** 6)
    count = memory.parameter_count(lambda **d: make_model(config, **d), {"num_blocks": 10 ** 9, "couplings": 10 ** 6})
    assert count > 10 ** 15 and time.time() - start < 30  # building it, even on meta, would take hours


def test_a_tensor_beyond_64_bit_sizes_is_none_and_refused():
    assert memory.parameter_count(lambda: nn.Linear(10 ** 10, 10 ** 10)) is None
    with pytest.raises(UserError, match=r"^the model does not fit: one of its weight tensors would have more elements "
                                        r"than 64-bit sizes can count, .*; lower --a or --b$"):
        memory.check_fits(lambda: nn.Linear(10 ** 10, 10 ** 10), CPU, ("a", "b"))


def test_another_error_of_the_build_is_not_hidden():
    def broken():
        raise RuntimeError("a bug in the model")
    with pytest.raises(RuntimeError, match="a bug in the model"):
        memory.parameter_count(broken)


def test_the_refusal_names_the_familys_size_flags(monkeypatch):
    monkeypatch.setattr(memory, "memory_bytes", lambda device: 2 ** 30)  # a 1 GiB device
    assert memory.check_fits(lambda: nn.Linear(1000, 1000), CPU, ("x",)) == 1_001_000
    need = 16 * (10 ** 8 + 10 ** 4)
    with pytest.raises(UserError) as info:
        memory.check_fits(lambda: nn.Linear(10 ** 4, 10 ** 4), CPU, ("width", "depth", "count"))
    assert str(info.value) == (f"the model does not fit: 100,010,000 parameters need about {need / 2 ** 30:,.0f} GiB "
                               "for weights, gradients and Adam state, and the cpu has 1 GiB; lower --width, --depth "
                               "or --count")


@pytest.mark.parametrize("size_flags, family_flags", [
    ("--z_dim, --num_filters or --flow_length", training.SIZE_FLAGS),
    ("--hidden_channels, --num_blocks or --couplings", realnvp_family.SIZE_FLAGS),
    ("--latent_dim", gan_family.SIZE_FLAGS),
])
def test_each_family_names_its_own_size_flags(size_flags, family_flags):
    assert memory._flag_list(family_flags) == size_flags


def test_memory_of_the_cpu_is_the_machines():
    assert memory.memory_bytes(CPU) > 2 ** 28
