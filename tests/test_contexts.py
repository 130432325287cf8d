"""dgmkit/contexts.py: eval_mode restores the module's mode, also after an error; forked_rng leaves the caller's random
stream as it was, its seeded draws are reproducible, and disabled it is no fork at all."""
import pytest
import torch
import torch.nn as nn

from dgmkit.contexts import eval_mode, forked_rng


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_previous_mode(training):
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    module.train(training)
    with eval_mode(module) as inside:
        assert inside is module and not module.training and not module[1].training
    assert module.training is training and module[1].training is training
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(module):
            raise RuntimeError("inside")
    assert module.training is training


def test_forked_rng_leaves_the_callers_stream_untouched():
    torch.manual_seed(5)
    expected = torch.rand(4)  # what the caller draws next without the block
    torch.manual_seed(5)
    with forked_rng("cpu"):
        inside = torch.rand(3)  # the block draws from the caller's state, on a copy ...
    assert torch.equal(torch.rand(4), expected)  # ... which the caller never sees
    torch.manual_seed(5)
    assert torch.equal(inside, torch.rand(3))


def test_forked_rng_with_a_seed_draws_the_seeds_stream():
    torch.manual_seed(0)
    with forked_rng(torch.device("cpu"), seed=11):
        first = torch.randn(5)
    torch.manual_seed(123)  # another caller state: the seeded draws do not depend on it
    with forked_rng("cpu", seed=11):
        second = torch.randn(5)
    torch.manual_seed(11)
    assert torch.equal(first, second) and torch.equal(first, torch.randn(5))
    torch.manual_seed(123)
    after = torch.rand(2)
    torch.manual_seed(123)
    with forked_rng("cpu", seed=11):
        torch.randn(100)
    assert torch.equal(torch.rand(2), after)


def test_forked_rng_disabled_is_no_fork():
    """enabled=False: the block draws on the caller's stream (and the seed is not applied)."""
    torch.manual_seed(7)
    reference = torch.rand(6)
    torch.manual_seed(7)
    with forked_rng("cpu", seed=99, enabled=False):
        inside = torch.rand(2)
    assert torch.equal(inside, reference[:2]) and torch.equal(torch.rand(4), reference[2:])
