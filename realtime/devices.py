"""Streaming through PortAudio (sounddevice): microphone and/or speaker, one duplex callback.

The callback only copies: device input (or the next slice of a preloaded file) into the
engine's input ring, the engine's output into the device buffer (or a preallocated capture
buffer), and it counts PortAudio status flags. A worker thread runs the model steps; the
calling thread waits, reports progress and stops the stream.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .engine import Engine
from .errors import RealtimeError
from .io import import_sounddevice


def device_latency(sample_rate: int, device_block: int, input_device: Any, output_device: Any,
                   use_input: bool, use_output: bool, microphones: int = 1) -> tuple[int, int]:
    """Input and output latency in samples that PortAudio reports for a stream with these settings."""
    sounddevice = import_sounddevice()
    kind = (use_input, use_output)
    settings = dict(samplerate=sample_rate, blocksize=device_block, dtype="float32", latency="low")
    try:
        if kind == (True, True):
            stream = sounddevice.Stream(device=(input_device, output_device), channels=(microphones, 1), **settings)
            latency_in, latency_out = stream.latency
        elif use_input:
            stream = sounddevice.InputStream(device=input_device, channels=microphones, **settings)
            latency_in, latency_out = stream.latency, 0.0
        else:
            stream = sounddevice.OutputStream(device=output_device, channels=1, **settings)
            latency_in, latency_out = 0.0, stream.latency
        stream.close()
    except sounddevice.PortAudioError as error:
        raise RealtimeError(f"cannot open the audio device ({error})") from error
    return round(latency_in * sample_rate), round(latency_out * sample_rate)


def run_device(
    engine: Engine,
    *,
    file_input: np.ndarray | None = None,
    far_end: np.ndarray | None = None,
    speaker: bool = True,
    duration: float | None = None,
    input_device: Any = None,
    output_device: Any = None,
    progress: Callable[[Engine], None] | None = None,
    progress_interval: float = 1.0,
    mics: Sequence[int] | None = None,
    far_end_channel: int | None = None,
    play_far_end: bool = False,
) -> np.ndarray | None:
    """Stream through PortAudio until the file ends (plus the flush), ``duration`` or Ctrl-C.

    Args:
        engine: a configured engine (its ``device_block`` is the PortAudio block size).
        file_input: ``[C_in, T]`` to play in instead of the microphone.
        far_end: ``[1, T]`` far-end signal for echo cancellation with the microphone.
        speaker: play the first output channel; otherwise capture the output and return it.
        duration: stop after this many seconds (microphone input).
        progress: called with the engine about every ``progress_interval`` seconds.
        mics: input device channels that feed the model's microphones, in array order
            (:func:`realtime.io.select_input_channels`); default the first ones.
        far_end_channel: echo models: the input device channel that carries the far end (a
            two-channel capture: microphone and a loopback of the loudspeaker signal).
        play_far_end: echo models: play ``far_end`` on the output device (the loudspeaker whose
            echo the microphone picks up) instead of the model's output, which is captured and
            returned (``speaker`` must be False); without ``duration`` the stream ends with it.

    Returns:
        The captured output ``[C_out, T]`` when ``speaker`` is False, else None.
    """
    sounddevice = import_sounddevice()
    model = engine.model
    rate = int(model.sample_rate)
    block = engine.device_block
    use_mic = file_input is None
    microphones = int(getattr(model, "num_microphones", 1))  # capture channels of a microphone array
    selected = list(range(microphones)) if mics is None else [int(channel) for channel in mics]
    captured_channels = selected + ([int(far_end_channel)] if far_end_channel is not None else [])
    device_channels = max(captured_channels) + 1  # channels opened on the input device
    if play_far_end and (far_end is None or speaker or not use_mic):
        raise RealtimeError("playing the far end needs a far-end signal, the microphone and a captured output")
    if use_mic and duration is None and not speaker and not play_far_end:
        raise RealtimeError("recording from the microphone to a file needs a --duration")
    if file_input is not None:
        total = file_input.shape[-1] + engine.signal_delay
    elif duration:
        total = int(duration * rate)
    elif play_far_end:
        total = far_end.shape[-1] + engine.signal_delay
    else:
        total = None
    capture = np.zeros((model.num_output_channels, (total or 0) + block), dtype=np.float32) if not speaker else None
    in_block = np.zeros((model.num_input_channels, block), dtype=np.float32)
    out_block = np.zeros((model.num_output_channels, block), dtype=np.float32)
    position = np.zeros(1, dtype=np.int64)  # samples delivered so far (mutable from the callback)
    wake = threading.Event()
    finished = threading.Event()

    def callback(indata: np.ndarray, outdata: np.ndarray | None, frames: int, time: Any, status: Any) -> None:
        if status:
            engine.metrics.count_status(status)
        start = int(position[0])
        current_in = in_block[:, :frames]
        if use_mic:
            for model_channel, device_channel in enumerate(selected):  # copies only, no allocation
                current_in[model_channel] = indata[:, device_channel]  # [frames] of one microphone
            if far_end_channel is not None:
                current_in[microphones] = indata[:, far_end_channel]  # [frames] of the loopback channel
            elif far_end is not None:
                available = max(0, min(frames, far_end.shape[-1] - start))
                current_in[microphones, :available] = far_end[0, start : start + available]
                current_in[microphones, available:] = 0.0
        else:
            available = max(0, min(frames, file_input.shape[-1] - start))
            current_in[:, :available] = file_input[:, start : start + available]
            current_in[:, available:] = 0.0
        engine.push(current_in)
        current_out = out_block[:, :frames]
        engine.pull(current_out)
        if outdata is not None:
            outdata[:, 0] = current_in[microphones] if play_far_end else current_out[0]
        if capture is not None and start + frames <= capture.shape[-1]:
            capture[:, start : start + frames] = current_out
        position[0] = start + frames
        wake.set()
        if total is not None and start + frames >= total:
            finished.set()

    def duplex_callback(indata, outdata, frames, time, status):  # noqa: ANN001 - PortAudio signature
        callback(indata, outdata, frames, time, status)

    def input_callback(indata, frames, time, status):  # noqa: ANN001
        callback(indata, None, frames, time, status)

    def output_callback(outdata, frames, time, status):  # noqa: ANN001
        callback(None, outdata, frames, time, status)

    settings = dict(samplerate=rate, blocksize=block, dtype="float32", latency="low")
    try:
        if use_mic and (speaker or play_far_end):
            stream = sounddevice.Stream(device=(input_device, output_device), channels=(device_channels, 1),
                                        callback=duplex_callback, **settings)
        elif use_mic:
            stream = sounddevice.InputStream(device=input_device, channels=device_channels, callback=input_callback,
                                             **settings)
        elif speaker:
            stream = sounddevice.OutputStream(device=output_device, channels=1, callback=output_callback, **settings)
        else:
            raise RealtimeError("file to file streaming does not use a device; use the file driver")
    except sounddevice.PortAudioError as error:
        raise RealtimeError(f"cannot open the audio device ({error})") from error

    running = threading.Event()
    running.set()

    def worker() -> None:
        while running.is_set():
            wake.wait(0.05)
            wake.clear()
            engine.run_pending()

    thread = threading.Thread(target=worker, name="speechkit-realtime-worker", daemon=True)
    engine.reset()
    thread.start()
    try:
        with stream:
            while not finished.wait(progress_interval):
                if progress is not None:
                    progress(engine)
    finally:
        running.clear()
        thread.join(timeout=2.0)
    if capture is None:
        return None
    return capture[:, : int(position[0])]


def describe_devices() -> str:
    """PortAudio's device list as text."""
    return str(import_sounddevice().query_devices())


__all__ = ["describe_devices", "device_latency", "run_device"]
