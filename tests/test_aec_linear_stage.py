"""The linear stage wired in: complex_d3net_aec's linear_stage field, the echo pipeline's alignment margin,
the bundled linear_aec_16k and ``speechkit aec --linear-only``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import fftconvolve

from speechkit.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from speechkit.cli import EXIT_OK, EXIT_USAGE, main
from speechkit.models import build_model, get_model_class

RATE = 16000


def _far_and_echo(seconds: float, delay: int, seed: int = 0, tail: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """White far end and its echo through a decaying response of ``tail`` seconds after ``delay`` samples."""
    rng = np.random.default_rng(seed)
    far_end = (0.05 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    taps = np.arange(int(tail * RATE))
    response = rng.standard_normal(taps.size) * np.exp(-6.9 * taps / (tail * RATE))
    response[0] = 3.0
    response = 0.5 * response / np.sqrt(np.sum(response**2))
    echo = np.zeros_like(far_end)
    echo[delay:] = fftconvolve(far_end, response)[: far_end.size - delay]
    return far_end, echo.astype(np.float32)


def test_paper_presets_keep_their_size_and_the_linear_stage_adds_only_input_channels() -> None:
    model_class = get_model_class("complex_d3net_aec")
    with torch.device("meta"):
        paper, linear = model_class.from_preset("paper"), model_class.from_preset("paper_linear")
    assert not paper.config.linear_stage and paper.num_parameters() == 353_188
    # two more complex input channels of the 3x3 input conv to 24 channels: 2 x 24 x 9 x 2 real weights
    assert linear.num_parameters() == 353_188 + 2 * 24 * 9 * 2
    assert linear.input_layout == paper.input_layout  # still (microphone, far end) from outside
    assert paper.reference_lead == 0 and linear.reference_lead == 80  # 5 ms at 16 kHz


def test_checkpoints_without_the_linear_fields_load_unchanged(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny").eval()
    path = save_checkpoint(model, tmp_path / "new.safetensors")
    metadata = read_metadata(path)
    for field in [key for key in metadata["config"] if key.startswith("linear_")]:
        del metadata["config"][field]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"speechkit": json.dumps(metadata)})
    loaded = load_checkpoint(old).eval()
    assert loaded.config.linear_stage is False and loaded.linear_filter is None
    x = 0.1 * torch.randn(1, 2, 1024)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_the_network_reads_the_linear_error_and_echo_estimate() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny_linear").eval()
    far_end, echo = _far_and_echo(1.0, delay=0, tail=0.01)  # the tiny preset models 16 ms
    x = torch.from_numpy(np.stack([echo, far_end]))[None]  # [1, 2, T]
    with torch.no_grad():
        spec = model._input_spectrum(x)  # [1, 4, 2, F, N]
        error, linear_echo = model.linear_filter(x[:, 0], x[:, 1])  # [1, T]
        for head in (model.echo_mask_head,):  # no residual echo: the echo estimate is the linear one
            for parameter in head.parameters():
                parameter.zero_()
        _, echo_estimate = model.forward_with_echo(x)  # [1, 1, 1, T]
    power = spec.pow(2).sum(dim=(2, 3))[0]  # [4, N] per channel and frame
    late = power[:, power.shape[-1] // 2 :].sum(dim=-1)  # second half: the filter has converged
    assert late[1] < 1e-2 * late[0]  # the error channel holds far less than the microphone (20 dB)
    assert torch.allclose(late[2], late[0], rtol=0.1)  # the echo estimate holds about the microphone's
    assert float((echo_estimate[0, 0, 0] - linear_echo[0]).abs().max()) < 1e-4


def test_pass_through_init_starts_the_network_at_the_linear_stage_output() -> None:
    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny_linear", pass_through_init=True).eval()
    default = build_model("complex_d3net_aec", "tiny_linear").eval()
    far_end, echo = _far_and_echo(1.0, delay=0, tail=0.01)
    x = torch.from_numpy(np.stack([echo + 0.01 * far_end[::-1], far_end]))[None]  # [1, 2, T]
    frames = model.stft.num_frames(x.shape[-1])
    padded = torch.nn.functional.pad(x, (0, frames * model.config.hop_length - x.shape[-1]))
    with torch.no_grad():
        near_end, echo_estimate = model.forward_with_echo(x)  # [1, 1, 1, T] each
        error, linear_echo = model.linear_filter(padded[:, 0], padded[:, 1])  # [1, N * hop]
        error = model.istft(model.stft(error[:, None])[..., :frames], length=x.shape[-1])  # as the STFT sees it
        different = default(x)
    assert float((near_end[0, 0, 0] - np.tanh(2.0) * error[0, 0]).abs().max()) < 1e-5
    assert float((echo_estimate[0, 0, 0] - linear_echo[0, : x.shape[-1]]).abs().max()) < 1e-4
    assert float((different - near_end).abs().max()) > 1e-3  # the default init is not a pass-through
    # with room above 1 the speech mask starts at exactly 1, off the tanh's saturation
    unit = build_model("complex_d3net_aec", "tiny_linear", pass_through_init=True, speech_mask_bound=1.2).eval()
    with torch.no_grad():
        assert float((unit(x)[0, 0, 0] - error[0, 0]).abs().max()) < 1e-5
    with pytest.raises(Exception, match="tanh mask"):
        build_model("complex_d3net_aec", "tiny_linear", pass_through_init=True, mask_kind="unbounded")
    # the flag changes the initial weights only: the parameter layout is the default's
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in default.state_dict().items()}


def test_the_suppressor_variant_starts_at_the_filter_plus_suppressor_output() -> None:
    """With linear_suppression_db the primary input is the residual-echo suppressor's output, computed
    on the model's own STFT: a pass-through network returns 0.96 x what the suppressor alone returns."""
    from speechkit.frontend.echo_suppression import ResidualEchoSuppressor

    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny_linear_suppression", pass_through_init=True).eval()
    far_end, echo = _far_and_echo(1.0, delay=0, tail=0.05)  # longer than the tiny filter's 16 ms: residual echo
    near = 0.02 * np.sin(2 * np.pi * 300 * np.arange(far_end.size) / RATE).astype(np.float32)
    near[: near.size // 2] = 0.0  # far-end single talk, then double talk
    x = torch.from_numpy(np.stack([echo + near, far_end]))[None]  # [1, 2, T]
    suppressor = ResidualEchoSuppressor(model.config.suppressor_config())
    with torch.no_grad():
        output = model(x)[0, 0, 0]  # [T]
        error, linear_echo = model.linear_filter(x[:, 0], x[:, 1])  # [1, T]
        alone = suppressor(error, linear_echo, x[:, 1])[0]  # [T]
    inner = slice(256, x.shape[-1] - 256)  # away from the last frames' padding
    assert float((output[inner] - np.tanh(2.0) * alone[inner]).abs().max()) < 1e-4 * float(alone.abs().max())
    # it suppresses residual echo the filter leaves: far-end single talk comes out quieter than the error
    first_half = slice(2000, x.shape[-1] // 2)
    assert float(output[first_half].pow(2).sum()) < 0.5 * float(error[0, first_half].pow(2).sum())
    assert model.stream_delay == build_model("complex_d3net_aec", "tiny_linear").stream_delay  # no added latency


def test_the_suppressor_keeps_its_time_constants_on_another_window() -> None:
    from speechkit.frontend.echo_suppression import SuppressorConfig

    base = SuppressorConfig()  # 256-sample window, hop 128
    wide = base.with_window(512)  # hop 256: one frame is two of the base's
    assert wide.win_length == 512 and wide.max_suppression_db == base.max_suppression_db
    assert wide.leakage_smoothing == pytest.approx(base.leakage_smoothing**2)
    assert wide.echo_release == pytest.approx(base.echo_release**2)
    with pytest.raises(Exception, match="linear_stage"):
        build_model("complex_d3net_aec", "tiny", linear_suppression_db=30.0)


def test_the_echo_pipeline_aligns_the_reference_a_margin_early() -> None:
    from speechkit.api import load_echo_canceller

    processor = load_echo_canceller("linear_aec_16k")
    delay = int(0.1 * RATE)
    far_end, echo = _far_and_echo(2.0, delay=delay)
    # the imposed bulk delay is 3 ms late: without the 5 ms margin the direct path would fall before the filter
    output = processor.cancel_echo(echo, far_end, RATE, delay_seconds=(delay + 48) / RATE)
    tail = slice(RATE, 2 * RATE)
    assert 10 * np.log10(np.sum(echo[tail] ** 2) / np.sum(output[tail] ** 2)) > 25.0


def test_bundled_linear_canceller_is_configuration_only() -> None:
    from speechkit.pretrained import LINEAR_ECHO_CANCELLER, bundled_model

    bundled = bundled_model(LINEAR_ECHO_CANCELLER)
    assert bundled.card is not None and "ERLE" in bundled.card.read_text(encoding="utf-8")
    metadata = read_metadata(bundled.path)
    assert metadata["model"] == "linear_aec" and metadata["config"] == {
        key: value for key, value in json.loads(json.dumps(vars(get_model_class("linear_aec").presets["16k"]))).items()
    }
    model = load_checkpoint(bundled.path)
    assert model.num_parameters() == 0 and model.algorithmic_latency == 256 + 128  # block + suppressor overlap


def test_cli_linear_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    far_end, echo = _far_and_echo(2.0, delay=1600)
    near_end = np.zeros_like(echo)
    near_end[RATE + RATE // 2 :] = 0.02 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)
    soundfile.write(tmp_path / "mic.wav", echo + near_end, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "far.wav", far_end, RATE, subtype="FLOAT")
    out = tmp_path / "out.wav"
    args = ["aec", "--mic", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"), "-o", str(out)]
    assert main([*args, "--linear-only"]) == EXIT_OK
    assert "delay 100.0 ms" in capsys.readouterr().err
    output, rate = soundfile.read(out, dtype="float32")
    assert rate == RATE and output.shape == echo.shape
    converged = slice(RATE, RATE + RATE // 2)  # far-end single talk after one second
    assert 10 * np.log10(np.sum(echo[converged] ** 2) / np.sum(output[converged] ** 2)) > 25.0
    talk = slice(RATE + RATE // 2, 2 * RATE)  # the near end is kept (the filter does not cancel it)
    assert 10 * np.log10(np.sum((output[talk] - near_end[talk]) ** 2) / np.sum(near_end[talk] ** 2)) < -15.0
    with pytest.raises(SystemExit) as usage:
        main([*args, "--linear-only", "--model", "x.safetensors", "--force"])
    assert usage.value.code == EXIT_USAGE
    # plain `speechkit aec` runs the bundled network behind this linear stage (this stage alone if none is bundled)
    from speechkit.pretrained import LINEAR_ECHO_CANCELLER, bundled_echo_canceller

    default_out = tmp_path / "default.wav"
    assert main(["aec", "--mic", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"), "-o",
                 str(default_out)]) == EXIT_OK
    default = soundfile.read(default_out, dtype="float32")[0]
    if bundled_echo_canceller().stem == LINEAR_ECHO_CANCELLER:
        np.testing.assert_array_equal(default, output)
    else:  # the network removes more of the converged echo than the linear stage alone
        assert not np.array_equal(default, output)
        assert np.sum(default[converged] ** 2) < np.sum(output[converged] ** 2)


def test_a_far_end_that_never_reaches_the_microphone_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(5)
    envelope = np.repeat(rng.uniform(0.0, 1.0, 40), RATE // 10)  # [4 s]: syllable-like bursts
    near_end = (0.02 * envelope * rng.standard_normal(envelope.size)).astype(np.float32)
    far_end = (0.1 * rng.permutation(envelope) * rng.standard_normal(envelope.size)).astype(np.float32)
    soundfile.write(tmp_path / "mic.wav", near_end, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "far.wav", far_end, RATE, subtype="FLOAT")
    assert main(["aec", "--mic", str(tmp_path / "mic.wav"), "--ref", str(tmp_path / "far.wav"), "-o",
                 str(tmp_path / "out.wav")]) == EXIT_OK
    # no echo path: the delay estimate is unreliable, and the user is told what cancelling then costs
    assert "does not play into this microphone" in capsys.readouterr().err


def test_the_realtime_engine_with_the_files_delay_equals_speechkit_aec(tmp_path: Path) -> None:
    """The streaming export behind the realtime engine, with the far end aligned by the delay the file
    path measures (minus the model's reference lead, read from the export), gives the file path's output."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from realtime.echo_delay import DelayAlignedModel
    from realtime.engine import Engine
    from realtime.model import StreamModel
    from speechkit.api import Processor
    from speechkit.delay import estimate_delay
    from speechkit.export import export_onnx, read_onnx_metadata

    torch.manual_seed(0)
    model = build_model("complex_d3net_aec", "tiny_linear_suppression", pass_through_init=True).eval()
    far_end, echo = _far_and_echo(1.0, delay=600, tail=0.01)
    near = 0.02 * np.sin(2 * np.pi * 300 * np.arange(far_end.size) / RATE).astype(np.float32)
    mic = echo + near
    result = export_onnx(model, tmp_path / "aec.onnx", streaming=True, verify_steps=4)
    assert read_onnx_metadata(result.onnx_path)["reference_lead"] == model.reference_lead > 0
    delay = estimate_delay(mic, far_end, RATE)
    assert delay.samples == 600
    expected = Processor(model).cancel_echo(mic, far_end, RATE)  # [T], aligned with the input
    stream = DelayAlignedModel(StreamModel(result.onnx_path), delay_seconds=delay.seconds)
    output = Engine(stream, stream.hop_length).run_array(np.stack([mic, far_end]))[0]  # [T]
    assert stream.shift == 600 - model.reference_lead
    scale = float(np.abs(expected).max())
    # the last stream_delay samples are flushed differently: the file path's aligned far end stops with the
    # microphone, the stream's delayed far end runs on into the flush
    inner = slice(0, mic.size - model.stream_delay)
    assert float(np.abs(output - expected)[inner].max()) < 1e-4 * scale
    # without the alignment the same engine gives another output
    unaligned = Engine(StreamModel(result.onnx_path), stream.hop_length).run_array(np.stack([mic, far_end]))[0]
    assert float(np.abs(unaligned - expected).max()) > 1e-2 * scale
