"""Context managers every model family uses: a module in eval mode for a block, and a fork of the random state
(CPU, and the model's GPU when it has one) so that what a block draws leaves the caller's stream untouched.
"""
import contextlib

import torch


@contextlib.contextmanager
def eval_mode(module):
    """Put `module` in eval mode for the block and restore its previous mode afterwards, even on error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextlib.contextmanager
def forked_rng(device, seed=None, enabled=True):
    """torch.random.fork_rng over the CPU generator and, on CUDA, `device`'s: the block's draws (seeded with `seed`
    when given) leave the caller's random stream as it was. The one place the fork idiom is written; enabled=False
    runs the block on the caller's stream, unseeded."""
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else [], enabled=enabled):
        if seed is not None and enabled:
            torch.manual_seed(seed)
        yield
