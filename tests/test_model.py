"""Encoder, decoder and VAE: shapes, the zero-initialized values, per-image averaging, sampling."""
import math

import pytest
import torch

from cnn_encoder_decoder import CNNDecoder, CNNEncoder
from train_torch import VAE


def zero_vae(z_dim=20, num_filters=32):
    model = VAE(num_filters=num_filters, z_dim=z_dim, lr=1e-3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def random_images(batch, seed=0):
    return torch.randint(0, 16, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("z_dim", [1, 2, 20, 64])
@pytest.mark.parametrize("num_filters", [8, 32])
def test_encoder_decoder_shapes(z_dim, num_filters):
    encoder, decoder = CNNEncoder(num_filters=num_filters, z_dim=z_dim), CNNDecoder(num_filters=num_filters, z_dim=z_dim)
    mean, log_std = encoder(random_images(5))
    assert mean.shape == log_std.shape == (5, z_dim)
    logits = decoder(mean)
    assert logits.shape == (5, 16, 28, 28) and logits.dtype == torch.float32
    assert decoder.device == torch.device("cpu")


def test_channel_widths_follow_the_tutorial():
    encoder = CNNEncoder(num_filters=32)
    convs = [m for m in encoder.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert encoder.net[-1].in_features == 64 * 4 * 4


def test_encoder_rescales_to_minus_one_one():
    encoder = CNNEncoder()
    seen = {}
    encoder.net[0].register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0]))
    imgs = torch.tensor([0, 5, 15]).repeat_interleave(262)[:784].reshape(1, 1, 28, 28)
    encoder(imgs)
    assert seen["x"].dtype == torch.float32
    assert seen["x"].unique().tolist() == pytest.approx([-1.0, 5 / 15 * 2 - 1, 1.0])


def test_log_std_is_unconstrained():
    encoder = CNNEncoder(z_dim=3)
    with torch.no_grad():
        encoder.net[-1].weight.zero_()
        encoder.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -4.0, 2.5, -0.5]))
    mean, log_std = encoder(random_images(2))
    torch.testing.assert_close(log_std, torch.tensor([[-4.0, 2.5, -0.5]] * 2))


def test_decoder_returns_logits_not_probabilities():
    decoder = CNNDecoder(z_dim=4)
    with torch.no_grad():
        decoder.net[-1].bias.fill_(-3.0)
        decoder.net[-1].weight.zero_()
    logits = decoder(torch.randn(2, 4))
    torch.testing.assert_close(logits, torch.full((2, 16, 28, 28), -3.0))


def test_zero_initialized_vae_values():
    """All weights 0: q(z|x) = N(0, I) so KL = 0; logits 0 so every pixel costs ln 16 nats (4 bits)."""
    L_rec, L_reg, bpd = zero_vae()(random_images(16))
    assert L_rec.item() == pytest.approx(784 * math.log(16), rel=1e-6)
    assert L_reg.item() == pytest.approx(0.0, abs=1e-7)
    assert bpd.item() == pytest.approx(4.0, rel=1e-6)


def test_losses_are_per_image_averages():
    """8 copies of an image give the same L_reg and L_rec as the image alone (no sum over the batch)."""
    torch.manual_seed(0)
    model = VAE(num_filters=8, z_dim=5, lr=1e-3)
    with torch.no_grad():  # std = exp(-30): z = mean, so L_rec is deterministic too
        model.encoder.net[-1].weight[5:].zero_()
        model.encoder.net[-1].bias[5:].fill_(-30.0)
    image = random_images(1, seed=3)
    one = model(image)
    eight = model(image.repeat(8, 1, 1, 1))
    for a, b in zip(one, eight):
        assert a.shape == b.shape == ()
        assert b.item() == pytest.approx(a.item(), rel=1e-5)
    assert one[1].item() > 0.1  # a real, non-zero KL was compared
    L_rec, L_reg, bpd = one
    assert bpd.item() == pytest.approx((L_rec + L_reg).item() / 784 / math.log(2), rel=1e-6)


def test_sample_dtype_shape_and_range():
    torch.manual_seed(0)
    samples = VAE(num_filters=8, z_dim=3, lr=1e-3).sample(7)
    assert samples.dtype == torch.long and samples.shape == (7, 1, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 15


def test_sample_draws_from_each_pixels_categorical():
    """Logits that allow only levels 3 and 9 with equal probability: samples are 3 or 9, half each."""
    torch.manual_seed(0)
    model = zero_vae(z_dim=2, num_filters=8)
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(-1e4)
        model.decoder.net[-1].bias[[3, 9]] = 0.0
    samples = model.sample(50)  # 39,200 pixels
    assert set(samples.unique().tolist()) == {3, 9}
    fraction_nine = (samples == 9).float().mean().item()
    assert abs(fraction_nine - 0.5) < 4 * math.sqrt(0.25 / samples.numel())


def test_sample_and_save_leaves_the_random_stream_alone(tmp_path):
    """The assignment's sample_and_save writes samples_epoch_XXX.png and logs the grid, drawing on a fork of the
    RNG: the global stream afterwards is the one it would be without the call."""
    from torch.utils.tensorboard import SummaryWriter

    from train_torch import sample_and_save
    model = VAE(num_filters=4, z_dim=2, lr=1e-3)
    torch.manual_seed(3)
    expected = torch.rand(5)
    torch.manual_seed(3)
    with SummaryWriter(str(tmp_path)) as writer:
        sample_and_save(model, 7, writer, batch_size=4)
    assert torch.equal(torch.rand(5), expected)
    assert (tmp_path / "samples_epoch_007.png").stat().st_size > 0
