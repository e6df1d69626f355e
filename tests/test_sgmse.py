"""SGMSE+: paper size, the OUVE SDE, the samplers, seeding, training objective, ONNX and the numpy sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speechkit.errors import ConfigError
from speechkit.models import build_model
from speechkit.models.sgmse import SGMSE
from speechkit.nn.diffusion import COMPLEX_NOISE_STD, OUVESDE, list_noise, num_draws, pc_sample
from speechkit.nn.ncsnpp import fir_downsample, fir_kernel_2d, fir_upsample

#: the journal backbone, measured with the reference code (65.591 M, with the 128 Fourier frequencies)
PAPER_PARAMETERS = 65_591_000
#: the EARS 48 kHz backbone (ncsnpp_48k), counted on the reference modules
EARS_PARAMETERS = 64_739_854


def _tiny(**overrides) -> SGMSE:
    torch.manual_seed(0)
    return build_model("sgmse", "tiny", **overrides).eval()


def _noisy(seconds: float = 0.25, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    return (0.4 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(t.shape, generator=generator))[None, None]


def test_paper_size_on_the_meta_device():
    with torch.device("meta"):
        model = build_model("sgmse", "paper")
    total = model.num_parameters() + model.backbone.time_fourier.frequencies.numel()
    assert abs(total / PAPER_PARAMETERS - 1) < 0.005
    assert len(model.backbone.flat_modules()) == 77 and len(model.state_dict()) == 647
    assert (model.config.num_freqs, model.frontend_spec.hop_length, model.options["steps"]) == (256, 128, 30)
    with torch.device("meta"):
        dereverb = build_model("sgmse", "paper_dereverb")
    assert (dereverb.options["steps"], dereverb.options["snr"]) == (50, 0.33)
    with torch.device("meta"):  # the reference ncsnpp_48k with its training defaults: 64,739,854 in its count
        wide = build_model("sgmse", "ears_48k")
    assert wide.num_parameters() + wide.backbone.time_fourier.frequencies.numel() == EARS_PARAMETERS
    assert len(wide.backbone.flat_modules()) == 56 and len(wide.state_dict()) == 581


def test_reduced_presets_keep_the_paper_layout_at_cpu_sizes():
    sizes = {}
    for preset in ("small", "xsmall"):
        with torch.device("meta"):
            model = build_model("sgmse", preset)
        sizes[preset] = model.num_parameters()
        assert (model.config.num_freqs, model.frontend_spec.hop_length, model.options["steps"]) == (256, 128, 30)
    assert sizes == {"small": 1_783_994, "xsmall": 1_242_954}


def test_config_refuses_sizes_the_unet_cannot_halve():
    with pytest.raises(ConfigError):
        build_model("sgmse", "tiny", n_fft=60)  # 31 bins
    with pytest.raises(ConfigError):
        build_model("sgmse", "tiny", frame_multiple=6)


def test_fir_resampling_matches_direct_formulas():
    kernel = fir_kernel_2d((1, 3, 3, 1))
    x = torch.randn(2, 3, 8, 6)
    down = fir_downsample(x, kernel)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    expected = sum(kernel[i, j] * padded[..., i : i + 7 : 2, j : j + 5 : 2] for i in range(4) for j in range(4))
    torch.testing.assert_close(down, expected)
    # upsampling a constant keeps it away from the borders; its adjoint scaled by 4 is the downsampler
    up = fir_upsample(torch.ones(1, 1, 6, 6), kernel)
    assert up.shape == (1, 1, 12, 12) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(8, 8))
    y = torch.randn(2, 3, 4, 3)
    inner_up = (fir_upsample(y, kernel) * x).sum()
    inner_down = 4 * (y * down).sum()
    torch.testing.assert_close(inner_up, inner_down, rtol=1e-5, atol=1e-5)


def test_ouve_std_and_mean_solve_the_forward_sde():
    sde = OUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5)
    steps = 20000
    variance, dt = 0.0, 1.0 / steps
    for index in range(steps):  # d Var / dt = -2 theta Var + g(t)^2 (midpoint rule)
        t = torch.tensor((index + 0.5) * dt, dtype=torch.float64)
        variance += dt * (-2 * sde.theta * variance + float(sde.diffusion(t)) ** 2)
    assert abs(math.sqrt(variance) - float(sde.std(torch.tensor(1.0, dtype=torch.float64)))) < 1e-4
    x0, y = torch.zeros(1, 3), torch.ones(1, 3)
    assert torch.allclose(sde.mean(x0, y, torch.tensor([1.0])), torch.full((1, 3), 1 - math.exp(-1.5)))


def test_pc_sampler_with_the_exact_score_returns_the_clean_point():
    """For a point mass at x0 the score is known; the sampler must land on x0 from far away."""
    sde = OUVESDE()
    x0 = torch.tensor([[0.3, -0.2, 0.5, 0.1]]).repeat(1, 64)  # [1, 256]
    y = x0 + 0.4

    def exact(x, condition, t):
        return -(x - sde.mean(x0, condition, t)) / sde.std(t)[:, None] ** 2

    generator = torch.Generator().manual_seed(0)
    draws = [torch.randn(x0.shape, generator=generator) * COMPLEX_NOISE_STD for _ in range(num_draws(30, 1))]
    sample = pc_sample(exact, y, sde, list_noise(draws), steps=30, corrector_steps=1, snr=0.5)
    assert float((sample - x0).abs().max()) < 0.05
    assert float((y - x0).abs().max()) == pytest.approx(0.4)


def test_seed_reproduces_and_changes_the_output():
    model = _tiny()
    noisy = _noisy()
    with torch.no_grad():
        first, again = model(noisy), model(noisy)
        model.set_options({"seed": 5})
        other = model(noisy)
        model.set_options({"seed": 0, "sampler": "ode", "steps": 4})
        ode = model(noisy)
    assert first.shape == (1, 1, 1, noisy.shape[-1]) and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.allclose(first, other) and not torch.allclose(first, ode)
    with pytest.raises(ConfigError):
        model.set_options({"sampler": "euler"})


def test_silence_stays_finite():
    model = _tiny()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 4000))
    assert torch.isfinite(out).all()


def test_score_convention_and_padding():
    """score = -unet([x, y], t) with the unet's output divided by t; frames are padded and cropped."""
    model = _tiny()
    generator = torch.Generator().manual_seed(2)
    x, y = (torch.randn(1, 1, 2, 32, 8, generator=generator) for _ in range(2))
    t = torch.tensor([0.4])
    with torch.no_grad():
        score = model.score(x, y, t)
        features = torch.cat((x[:, 0], y[:, 0]), dim=1)
        torch.testing.assert_close(score[:, 0], -model.backbone(features, t))
        unpadded = model.score(x[..., :7], y[..., :7], t)  # 7 frames -> padded to 8 inside
    assert unpadded.shape[-1] == 7
    levels, final = [], []
    handles = [up.output_conv.register_forward_hook(lambda module, inputs, output: levels.append(output))
               for up in model.backbone.up_levels]
    handles.append(model.backbone.output_layer.register_forward_hook(lambda m, inputs, output: final.append(inputs[0])))
    with torch.no_grad():  # the 1x1 output layer reads the output-skip pyramid divided by t
        model.backbone(features, t)
    for handle in handles:
        handle.remove()
    pyramid = levels[0]
    for level_out in levels[1:]:
        pyramid = fir_upsample(pyramid, fir_kernel_2d((1, 3, 3, 1))) + level_out
    torch.testing.assert_close(final[0], pyramid / t)


def test_output_inverts_the_sample_with_its_padded_frames():
    """As the reference (``to_audio(sample, T)`` on the padded sample): the padded frames overlap the last samples."""
    model = _tiny()
    model.set_options({"steps": 2})
    noisy = _noisy(0.1)  # 1600 samples: 101 frames, padded to 104
    peak = noisy.abs().max()
    with torch.no_grad():
        output = model(noisy)[:, 0]  # [1, 1, T]
        condition = model.pad_frames(model.spectrum(noisy / peak))
        estimate = model.sample(condition)  # the same seeded draws as forward
        expected = model.waveform(estimate, noisy.shape[-1]) * peak
        cropped = model.waveform(estimate[..., :101], noisy.shape[-1]) * peak
    assert condition.shape[-1] == 104
    torch.testing.assert_close(output, expected)
    tail = model.config.n_fft // 2
    torch.testing.assert_close(cropped[..., :-tail], expected[..., :-tail], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cropped[..., -tail:], expected[..., -tail:], rtol=1e-4, atol=1e-5)


def test_score_matching_objective_trains_the_backbone():
    from recipes.training.objectives import DenoisingScoreMatching

    model = _tiny()
    model.train()
    objective = DenoisingScoreMatching(t_eps=0.03)
    torch.manual_seed(3)
    clean = _noisy(0.2, seed=4)[:, None]  # [B, S, C, T]
    batch = {"targets": clean, "mixture": clean[:, 0] + 0.1 * torch.randn(1, 1, clean.shape[-1])}
    loss = objective.training_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    generator = torch.Generator().manual_seed(0)
    x_t, std, z = model.perturb(clean, batch["mixture"], torch.tensor([0.5]), generator=generator)
    noisy, target_clean, _ = model._normalised(batch["mixture"], clean[:, 0])
    mean = model.sde.mean(model.spectrum(target_clean), model.spectrum(noisy), torch.tensor([0.5]))
    torch.testing.assert_close(x_t - mean, std.reshape(-1, 1, 1, 1, 1) * z)


def test_torch_and_numpy_samplers_agree_with_the_same_noise():
    """realtime.sampler's OUVE loop, fed the PyTorch score network, equals the model's sampler."""
    from realtime.sampler import Schedule, pc_sample as numpy_pc_sample

    model = _tiny()
    model.set_options({"steps": 4, "snr": 0.4})
    condition = model.pad_frames(model.spectrum(_noisy(0.1)))  # [1, 1, 2, 32, N]
    schedule = Schedule(**model.sampler_schedule())
    rng = np.random.default_rng(schedule.seed)
    from realtime.sampler import draw_noise

    noise = draw_noise(schedule, tuple(condition.shape[1:]), rng)  # [draws, 1, 2, 32, N]
    network = model.score_network()

    def score(x, cond, t):
        with torch.no_grad():
            out = network(torch.from_numpy(x), torch.from_numpy(cond), torch.tensor([t], dtype=torch.float32))
        return out.numpy()

    sample = numpy_pc_sample(score, condition[0].numpy(), schedule, noise)  # [1, 2, 32, N]
    with torch.no_grad():
        reference = model.sample(condition, noise=[torch.from_numpy(draw)[None] for draw in noise])
    scale = float(reference.abs().max())
    assert np.abs(sample - reference[0].numpy()).max() / scale < 1e-4
    assert float((reference - condition).abs().max()) > 1e-2  # the sampler moved


def test_score_network_onnx_export_and_realtime_loop(tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from realtime.sampler import OnnxScore, Schedule, draw_noise, pc_sample as numpy_pc_sample
    from speechkit.export import export_score_network, read_onnx_metadata

    model = _tiny()
    result = export_score_network(model, tmp_path / "score.onnx", frames=(4, 12))
    assert result.max_abs_error <= 1e-4
    metadata = read_onnx_metadata(result.onnx_path)
    assert (metadata["mode"], metadata["graph_kind"], metadata["score_domain"]) == ("sampler", "score", "compressed_stft")
    schedule = Schedule.from_metadata(metadata["schedule"])
    session = onnxruntime.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    condition = model.pad_frames(model.spectrum(_noisy(0.1)))  # [1, 1, 2, 32, 104]
    noise = draw_noise(schedule, tuple(condition.shape[2:]), np.random.default_rng(3))  # [draws, 2, 32, N]
    sample = numpy_pc_sample(OnnxScore(session, metadata["input_names"]), condition[0, 0].numpy(), schedule, noise)
    with torch.no_grad():
        reference = model.sample(condition, noise=[torch.from_numpy(draw)[None, None] for draw in noise])
    error = np.abs(sample - reference[0, 0].numpy()).max() / float(reference.abs().max())
    assert error < 1e-4, error


def test_cli_enhance_with_sampler_options_and_export(tmp_path, capsys):
    soundfile = pytest.importorskip("soundfile")
    pytest.importorskip("onnxruntime")
    from speechkit.checkpoint import save_checkpoint
    from speechkit.cli import EXIT_OK, main

    checkpoint = save_checkpoint(_tiny(), tmp_path / "tiny.safetensors")
    soundfile.write(tmp_path / "noisy.wav", _noisy(0.5)[0, 0].numpy(), 16000)
    outputs = []
    for name in ("a.wav", "b.wav"):
        code = main(["enhance", "--model", str(checkpoint), "--option", "steps=2", "--option", "seed=4", "--no-progress",
                     "-o", str(tmp_path / name), str(tmp_path / "noisy.wav")])
        assert code == EXIT_OK
        outputs.append(soundfile.read(tmp_path / name)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])  # same seed, same file: same output
    assert main(["enhance", "--model", str(checkpoint), "--option", "steps=0", "-o", str(tmp_path / "c.wav"),
                 str(tmp_path / "noisy.wav")]) != EXIT_OK
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "score.onnx")]) == EXIT_OK
    assert "score network" in capsys.readouterr().out


def test_realtime_engine_runs_the_spectral_sampler_like_pytorch(tmp_path):
    """realtime.chunk runs an SGMSE+ export live: its first window equals the PyTorch model with the same noise."""
    pytest.importorskip("onnxruntime")
    from realtime.model import load_model
    from realtime.sampler import draw_noise
    from speechkit.export import export_onnx

    model = _tiny()
    model.set_options({"steps": 2, "seed": 7})
    result = export_onnx(model, tmp_path / "sgmse.onnx", chunk_seconds=0.25, overlap_seconds=0.0625)
    live = load_model(result.onnx_path)
    assert (live.mode, live.window_length, live.hop_length) == ("sampler", 4000, 3000)
    signal = _noisy(0.5, seed=9)[0].numpy()  # [1, 8000]
    first = live.process(signal)
    np.testing.assert_array_equal(first, live.process(signal))  # reproducible per stream
    window = np.concatenate([np.zeros((1, 1000), np.float32), signal[:, :3000]], axis=-1)  # [-O, H)
    peak = float(np.abs(window).max())
    with torch.no_grad():
        condition = model.pad_frames(model.spectrum(torch.from_numpy(window / peak)[None]))  # [1, 1, 2, F, N']
        schedule = live._schedule
        noise = draw_noise(schedule, tuple(condition.shape[2:]), np.random.default_rng(schedule.seed))
        estimate = model.sample(condition, noise=[torch.from_numpy(draw)[None, None] for draw in noise])
        expected = (model.waveform(estimate, window.shape[-1]) * peak)[0].numpy()  # [1, N]
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(first[:, :3000] - expected[:, :3000]).max() / scale < 1e-4
