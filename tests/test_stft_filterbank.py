"""The causal STFT encoder/decoder pair and Conv-TasNet on it (encoder="stft")."""
import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.frontend.stft import STFT
from speechkit.frontend.stft_filterbank import STFTDecoder, STFTEncoder
from speechkit.models.conv_tasnet import ConvTasNet, ConvTasNetConfig

TINY_STFT = ConvTasNetConfig(
    n_filters=33, kernel_size=64, stride=32, bn_chan=8, hid_chan=16, skip_chan=8, n_blocks=2, n_repeats=1,
    n_src=1, causal=True, norm_type="cLN", sample_rate=16000, encoder="stft",
)


def test_encoder_equals_causal_stft_and_decoder_inverts_it():
    signal = torch.randn(2, 1000)
    encoder, decoder = STFTEncoder(64, 32), STFTDecoder(64, 32)
    reference = STFT(64, 32, padding="causal", backend="conv")(signal[:, None])  # [B, 1, 2, F, N]
    spec = encoder(signal)  # [B, 2F, N]
    assert torch.allclose(spec, reference.reshape(2, 66, -1), atol=1e-5)
    assert torch.allclose(decoder(spec, 1000), signal, atol=1e-5)


def test_mask_input_is_compressed_magnitude_and_mask_spreads_over_both_halves():
    encoder = STFTEncoder(64, 32, exponent=0.5)
    spec = encoder(torch.randn(1, 640))
    magnitude = torch.sqrt(spec[:, :33] ** 2 + spec[:, 33:] ** 2)
    assert torch.allclose(encoder.mask_input(spec), magnitude.sqrt(), atol=1e-4)
    mask = torch.rand(1, 33, spec.shape[-1])
    assert torch.equal(encoder.expand_mask(mask), torch.cat([mask, mask], dim=1))


@pytest.mark.parametrize("hops_per_step", [1, 3])
def test_stft_conv_tasnet_streams_like_offline(hops_per_step):
    torch.manual_seed(0)
    model = ConvTasNet(TINY_STFT).eval()
    signal = torch.randn(1, 1, 32 * 60)
    with torch.no_grad():
        offline = model(signal)
        state = model.initial_state(1)
        blocks = []
        step = 32 * hops_per_step
        for start in range(0, signal.shape[-1], step):
            block, state = model.forward_step(signal[..., start:start + step], state)
            blocks.append(block)
    streamed = torch.cat(blocks, dim=-1)
    delay = model.stream_delay
    assert delay == 32 and model.algorithmic_latency == 64
    assert torch.allclose(streamed[..., delay:], offline[..., : signal.shape[-1] - delay], atol=1e-5)


def test_stft_mask_never_amplifies():
    """A sigmoid mask on the STFT can only attenuate: the output is never louder than the input."""
    torch.manual_seed(1)
    model = ConvTasNet(TINY_STFT).eval()
    signal = torch.randn(1, 1, 3200)
    with torch.no_grad():
        spec_in = model.encoder(signal[:, 0])
        spec_out = model.encoder(model(signal)[:, 0, 0])
    energy_in = spec_in.square().sum()
    assert spec_out.square().sum() <= energy_in * 1.01


def test_stft_config_checks():
    with pytest.raises(ConfigError, match="n_filters must be"):
        ConvTasNetConfig(n_filters=32, kernel_size=64, stride=32, encoder="stft", causal=True, norm_type="cLN")
    with pytest.raises(ConfigError, match="unknown encoder"):
        ConvTasNetConfig(encoder="mel")


def test_enhance_stft_16k_preset():
    config = ConvTasNet.presets["enhance_stft_16k"]
    with torch.device("meta"):
        model = ConvTasNet(config)
    assert model.num_parameters() == 1_647_396
    assert model.algorithmic_latency == 256  # 16 ms at 16 kHz
