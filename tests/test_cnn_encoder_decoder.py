"""cnn_encoder_decoder.py (the assignment's encoder and decoder): shapes, the tutorial's channel widths, the input
rescaled to [-1, 1] for any number of levels, an unconstrained log-std, logits (not probabilities) out."""
import pytest
import torch

from cnn_encoder_decoder import CNNDecoder, CNNEncoder
from dgmkit.vae.model import VAE


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


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_the_encoder_scales_every_bit_depth_to_minus_one_one(bits):
    """Levels 0..L-1 enter the convs as -1..+1 (level / (L - 1) * 2 - 1), for any L, and the decoder emits L
    logits per pixel."""
    levels = 2 ** bits
    torch.manual_seed(0)
    model = VAE(4, 2, 1e-3, levels=levels)
    imgs = torch.randint(0, levels, (3, 1, 28, 28))
    by_hand = model.encoder.net[:-1](imgs.float() * (2.0 / (levels - 1)) - 1)
    assert torch.allclose(model.encoder.features(imgs), by_hand, atol=1e-6)
    assert model.decoder(torch.zeros(1, 2)).shape == (1, levels, 28, 28)
