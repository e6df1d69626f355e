"""``speechkit stream``: run an exported streaming model on a microphone or a file, live.

Registered through the ``speechkit.commands`` entry point (``stream = "realtime.cli:register"``),
so speechkit itself never imports this package and torch is never imported here.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from speechkit.files import AudioWarning

from .engine import FALLBACKS, Engine
from .errors import RealtimeError

#: smallest default device block in samples (PortAudio callbacks much shorter than this are fragile)
MIN_DEFAULT_BLOCK = 128
#: default device block of chunk-mode models (their hop is a large part of a second)
CHUNK_DEFAULT_BLOCK = 512


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stream`` subcommand."""
    parser = subparsers.add_parser(
        "stream",
        help="stream audio through an exported model in real time",
        description="Run a streaming ONNX export (speechkit export --streaming) block by block, "
        "from the microphone or a file to the speaker or a file, and report latency and timing.",
    )
    parser.add_argument("--model", required=True,
                        help=".onnx file from 'speechkit export' (streaming step graph, or a whole-chunk graph "
                        "run on a sliding window: --chunk SECONDS)")
    parser.add_argument("--input", default="mic",
                        help="'mic' or an audio file (any rate: resampled to the model's, as enhance does)")
    parser.add_argument("--output", default="speaker",
                        help="'speaker' or an output audio file (at the input file's rate when --input is a file)")
    parser.add_argument("--ref", default=None,
                        help="far-end audio file (echo-cancellation models); with --input mic it is played on the "
                        "output device (the loudspeaker the microphone hears) and the cleaned near end goes to "
                        "--output FILE")
    parser.add_argument("--ref-channel", type=int, default=None, metavar="N",
                        help="echo models: the far end is channel N of the input (a two-channel capture or file: "
                        "microphone plus a loopback of the loudspeaker signal)")
    parser.add_argument("--delay-ms", type=float, default=None,
                        help="echo models: the far end's bulk delay, if known (default: tracked live from the "
                        "past microphone and far-end samples, GCC-PHAT, as speechkit aec does on files)")
    parser.add_argument("--max-delay-ms", type=float, default=500.0,
                        help="echo models: search range of the live delay tracking (0: no alignment)")
    parser.add_argument("--mics", default=None, metavar="0,1,...",
                        help="input channels that feed the model's microphones, in array order (default: the "
                        "first M of an M-microphone model; a one-microphone model on a multichannel input "
                        "needs one), as for speechkit enhance")
    parser.add_argument("--latency-ms", type=float, default=None, help="refuse configurations above this latency")
    parser.add_argument("--block", type=int, default=None, help="device block in samples (default: hops >= 128)")
    parser.add_argument("--fallback", choices=FALLBACKS, default="passthrough", help="output of a missed step")
    parser.add_argument("--attenuation-limit", type=float, default=None, metavar="DB",
                        help="add the input back DB dB down (enhancers: masks artefacts; default: off)")
    parser.add_argument("--extra-buffer-ms", type=float, default=0.0, help="added output buffering (safety margin)")
    parser.add_argument("--compute-ms", type=float, default=None,
                        help="time a model step may take (default: one hop; chunk models: lower it to their "
                        "measured window time to cut the latency)")
    parser.add_argument("--realtime", action="store_true", help="pace a file-to-file run in real time")
    parser.add_argument("--duration", type=float, default=None, help="seconds to record from the microphone")
    parser.add_argument("--no-compensate", action="store_true", help="keep the latency in the output file")
    parser.add_argument("--spinning", action="store_true", help="let ONNX Runtime threads spin")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--graph-optimization", choices=("all", "extended", "basic", "disabled"), default=None,
        help="ONNX Runtime graph optimisation level (default: the one stored in the export)",
    )
    parser.add_argument("--cuda", action="store_true", help="use the CUDA execution provider if installed")
    parser.add_argument("--input-device", default=None, help="PortAudio input device (name or index)")
    parser.add_argument("--output-device", default=None, help="PortAudio output device (name or index)")
    parser.add_argument("--force", action="store_true", help="overwrite the output file")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live status line")
    parser.set_defaults(func=run)


def _device(value: str | None) -> Any:
    return int(value) if value is not None and value.isdigit() else value


def _print_live(engine: Engine) -> None:
    print(f"\r{engine.metrics.describe()}", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``speechkit stream``."""
    from speechkit.channels import parse_mics  # torch-free

    from .io import audio_file_info, file_input, read_audio, resample, select_input_channels, write_audio
    from .model import load_model

    mics = parse_mics(args.mics)

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.cuda else None
    model = load_model(args.model, spinning=args.spinning, intra_op_threads=args.threads, providers=providers,
                       graph_optimization=args.graph_optimization)
    if model.num_far_end_channels:
        model = _aligned(model, args)
    elif args.delay_ms is not None:
        raise RealtimeError("--delay-ms is only for echo-cancellation models (microphone plus far end)")
    rate = model.sample_rate
    hop = model.hop_length
    mode = getattr(model, "mode", "stream")
    if args.block:
        block = args.block
    elif mode == "stream":
        block = hop * -(-MIN_DEFAULT_BLOCK // hop)
    else:  # a chunk model's hop is a large part of its window: ordinary device blocks
        block = min(hop, CHUNK_DEFAULT_BLOCK)
    use_mic = args.input == "mic"
    use_speaker = args.output == "speaker"
    far = None
    signal = None
    capture = None  # input device channels that feed the model's microphones
    if args.ref_channel is not None:
        if not model.num_far_end_channels:
            raise RealtimeError("--ref-channel is only for echo-cancellation models (microphone plus far end)")
        if args.ref is not None:
            raise RealtimeError("pass the far end either as a file (--ref) or as an input channel (--ref-channel)")
        if args.ref_channel < 0 or (mics is not None and args.ref_channel in mics):
            raise RealtimeError(f"--ref-channel {args.ref_channel} must be a channel number not named in --mics")
    if use_mic:
        if args.ref is not None:
            if not model.num_far_end_channels:
                raise RealtimeError("--ref is only for echo-cancellation models (microphone plus far end)")
            if use_speaker:
                raise RealtimeError("with --input mic the loudspeaker plays the far end (--ref); write the cleaned "
                                    "near end to a file with --output FILE, or capture the far end with --ref-channel")
            far = read_audio(args.ref, rate)[:1]
        elif model.num_far_end_channels and args.ref_channel is None:
            raise RealtimeError("this model needs a far-end signal: pass --ref FILE or --ref-channel N")
        if mics is not None:  # the device must offer the highest channel named
            capture = select_input_channels(model.input_layout, max(mics) + 1, mics, "the input device")
        elif args.ref_channel is not None:  # the microphone(s): the first channels other than the far end's
            capture = [channel for channel in range(model.num_microphones + 1) if channel != args.ref_channel]
            capture = capture[: model.num_microphones]
    else:
        signal = file_input(args.input, rate, args.ref, model.input_layout, mics, args.ref_channel)
    device_in = device_out = 0
    if use_mic or use_speaker:
        from .devices import device_latency

        channels = list(capture or range(model.num_microphones)) + ([args.ref_channel] if use_mic and
                                                                     args.ref_channel is not None else [])
        device_in, device_out = device_latency(
            rate, block, _device(args.input_device), _device(args.output_device), use_mic, use_speaker or far is not None,
            max(channels) + 1,
        )
    engine = Engine(
        model,
        block,
        latency_budget_ms=args.latency_ms,
        fallback=args.fallback,
        extra_buffer=round(args.extra_buffer_ms * rate / 1000.0),
        compute_allowance=None if args.compute_ms is None else max(1, round(args.compute_ms * rate / 1000.0)),
        device_input=device_in,
        device_output=device_out,
        attenuation_limit_db=args.attenuation_limit,
    )
    live = None if args.quiet else _print_live
    if not args.quiet:
        window = ""
        if mode != "stream":
            window = (
                f" ({mode} mode: window {model.window_length}, overlap {model.overlap_length} samples;"
                f" latency = window + compute)"
            )
        print(f"{args.model}: {rate} Hz, hop {hop}, block {block}{window}; {engine.latency.describe()}",
              file=sys.stderr)
    step_times = engine.warm_up()
    realtime = use_mic or use_speaker or args.realtime
    if realtime:
        engine.check_compute(step_times)
    output = None
    try:
        if use_mic or use_speaker:
            from .devices import run_device

            output = run_device(
                engine, file_input=signal, far_end=far, speaker=use_speaker, duration=args.duration, mics=capture,
                input_device=_device(args.input_device), output_device=_device(args.output_device), progress=live,
                far_end_channel=args.ref_channel if use_mic else None, play_far_end=use_mic and far is not None,
            )
            if output is not None and not args.no_compensate:
                output = output[:, engine.signal_delay :]
        else:
            output = engine.run_array(signal, paced=args.realtime, compensate_latency=not args.no_compensate, progress=live)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    if not args.quiet:
        print(file=sys.stderr)
    if output is not None and not use_speaker:
        output_rate = rate
        if signal is not None and not use_mic:  # file to file: back at the input file's rate, as enhance writes
            output_rate, frames = audio_file_info(args.input)
            if output_rate != rate:  # the input file's length when the output is as long as the input
                same_length = args.ref is None and output.shape[-1] == signal.shape[-1]  # a --ref may be shorter
                length = frames if same_length else round(output.shape[-1] * output_rate / rate)
                output = resample(output, rate, output_rate, length)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioWarning)
            write_audio(args.output, output, output_rate, overwrite=args.force)
        for entry in caught:  # e.g. the output exceeded full scale and was soft-limited
            print(f"speechkit stream: warning: {entry.message}", file=sys.stderr)
    summary = engine.summary()
    if hasattr(model, "tracker"):
        summary["far_end_delay"] = model.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(engine.latency.describe())
        print(engine.metrics.describe())
        print(f"fallback on missed steps: {engine.fallback}; skipped steps: {engine.metrics.skipped_steps}")
        if hasattr(model, "tracker"):
            print(model.describe())
    return 0


def _aligned(model: Any, args: argparse.Namespace) -> Any:
    """An echo model wrapped so that its far end is delayed by the bulk delay (imposed or tracked)."""
    from .echo_delay import DelayAlignedModel, TrackerOptions

    if args.delay_ms is not None:
        if args.delay_ms < 0:
            raise RealtimeError(f"--delay-ms must not be negative, got {args.delay_ms:g}")
        return DelayAlignedModel(model, delay_seconds=args.delay_ms / 1000.0)
    if args.max_delay_ms <= 0:
        return DelayAlignedModel(model, delay_seconds=0.0)
    longest = args.max_delay_ms / 1000.0
    return DelayAlignedModel(model, options=TrackerOptions(max_delay_seconds=longest, window_seconds=max(2.0, 4 * longest)))
