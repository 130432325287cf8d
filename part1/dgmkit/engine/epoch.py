"""One epoch of any model trained by one optimizer on a loss (the VAE's train_vae, RealNVP), under the precision
the run chose, with the loss compiled when chosen (and run eagerly when compiling fails). No file I/O.
"""
import sys

import torch

from dgmkit.errors import NonFiniteLossError, first_line


def autocast(device, precision):
    """The autocast context of a precision: bf16 autocast on CPU or CUDA, or a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class CompiledOrEager:
    """fn compiled with torch.compile; if compiling fails, one line on stderr and fn runs eagerly from then on.

    A failure on the first call restores the CPU random state, so the eager retry draws the same noise.
    """

    def __init__(self, fn, mode=None):
        self.fn, self.compiled, self.calls = fn, torch.compile(fn, mode=mode), 0

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        state = torch.get_rng_state() if self.calls == 0 else None
        try:
            result = self.compiled(*args)
        except (RuntimeError, OSError, ImportError, AssertionError, TypeError, ValueError) as error:
            print(f"warning: torch.compile failed ({first_line(error)[:160]}); continuing without compilation",
                  file=sys.stderr)
            self.compiled = None
            if state is not None:
                torch.set_rng_state(state)
            return self.fn(*args)
        self.calls += 1
        return result


def train_epoch(model, loader, optimizer, loss_fn, names, precision="fp32", grad_clip=None, check_every_step=None):
    """One epoch of any model trained by one optimizer on a loss: the loop of train_vae and of RealNVP.

    Args:
        loss_fn: imgs [B, 1, 28, 28] -> dict of scalar tensors holding `names`; names[0] is backpropagated.
        precision, grad_clip, check_every_step: as train_vae's.
    Returns:
        dict of floats: the `names`, averages over the images seen (batch-size-weighted, summed on the device).
    Raises:
        NonFiniteLossError: at the first batch whose statistics are NaN or Inf (checked every step on the CPU;
        at the end of the epoch on a GPU, where a per-step check would force a host sync, with the same
        step number reported either way).
    """
    model.train()
    totals = torch.zeros(len(names), device=model.device)  # batch-size-weighted sums
    first_bad_step = torch.full((), -1, device=model.device)  # first step with a NaN/Inf loss; -1: none
    if check_every_step is None:
        check_every_step = model.device.type == "cpu"
    num_images = 0
    for step, (imgs, _) in enumerate(loader):
        imgs = imgs.to(model.device, non_blocking=True)  # [B, 1, 28, 28]
        with autocast(model.device, precision):
            terms = loss_fn(imgs)
        batch_stats = torch.stack([terms[name] for name in names]).detach()  # [len(names)]
        first_bad_step = torch.where((first_bad_step < 0) & ~batch_stats.isfinite().all(), step, first_bad_step)
        if check_every_step and first_bad_step >= 0:
            raise NonFiniteLossError("training", step + 1)

        optimizer.zero_grad(set_to_none=True)
        terms[names[0]].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        # Accumulate on the device: no .item() per step, so no host sync.
        totals += batch_stats * imgs.shape[0]
        num_images += imgs.shape[0]
    if first_bad_step >= 0:
        raise NonFiniteLossError("training", int(first_bad_step) + 1)
    return dict(zip(names, (totals / num_images).tolist()))
