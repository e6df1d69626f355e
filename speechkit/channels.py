"""The one channel-selection policy: which channels of a file or a capture device feed a model.

Torch-free (the realtime engine imports it). The policy, for a model with
:class:`~speechkit.tasks.InputLayout` ``layout`` and an input of ``audio_channels`` channels:

* **one microphone, no far end** (channel-wise model): every channel is processed on its own;
  ``mics`` restricts that to the listed channels.
* **M-microphone array** (``M > 1``): the model takes M channels in array order: ``mics`` when
  given (exactly M distinct channels), else the first M (an input with fewer is refused). An array
  model that declares its geometry (``layout.geometry``, e.g. a circular array it was trained on)
  takes an input of exactly M channels; a file with more is refused unless ``mics`` names the M
  channels in array order (guessing which of them form the array would be silent nonsense).
* **echo canceller** (far end present): the microphone channels as above (one microphone: the
  first channel, or ``mics``); the far-end reference always comes from its own signal.

Every refusal is a one-line :class:`~speechkit.errors.ConfigError` naming the expected layout.
"""
from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError
from .tasks import InputLayout


def parse_mics(text: str | None) -> list[int] | None:
    """``"0,1,2,3"`` -> ``[0, 1, 2, 3]`` (None stays None); a one-line ConfigError for anything else."""
    if text is None:
        return None
    try:
        mics = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--mics needs comma-separated channel numbers such as 0,1,2,3, got {text!r}") from None
    if not mics:
        raise ConfigError("--mics needs at least one channel number")
    return mics


def select_channels(audio_channels: int, layout: InputLayout, mics: Sequence[int] | None = None) -> list[int]:
    """Input channels (0-based, in model order) that feed the model's microphone inputs.

    For a channel-wise model (:attr:`InputLayout.channel_wise`) these are the channels processed
    one by one; for an array model they form one M-channel input; for an echo canceller they are
    its microphone channels (the far end is a separate signal).

    Raises:
        ConfigError: a channel out of range or repeated, the wrong number of ``mics`` for the
            array, or an input with fewer channels than the model's microphones.
    """
    if audio_channels < 1:
        raise ConfigError(f"the input has no channels; the model expects {layout.describe()}")
    if mics is not None:
        mics = [int(channel) for channel in mics]
        bad = [channel for channel in mics if not 0 <= channel < audio_channels]
        if bad:
            raise ConfigError(
                f"channel {bad[0]} does not exist: the input has channels 0..{audio_channels - 1}"
            )
        if len(set(mics)) != len(mics):
            raise ConfigError(f"mics {','.join(map(str, mics))} names a channel twice")
        if not layout.channel_wise and len(mics) != layout.num_microphones:
            raise ConfigError(
                f"the model expects {layout.describe()}; pass {layout.num_microphones} channel number(s) "
                f"with --mics, got {len(mics)}"
            )
        return mics
    if layout.channel_wise:
        return list(range(audio_channels))
    if audio_channels < layout.num_microphones:
        raise ConfigError(
            f"the model expects {layout.describe()} but the input has {audio_channels} channel(s)"
        )
    if layout.geometry is not None and audio_channels != layout.num_microphones:
        raise ConfigError(
            f"the model expects {layout.describe()} of a fixed geometry but the input has {audio_channels} "
            f"channels; name the {layout.num_microphones} array channels in array order with --mics"
        )
    return list(range(layout.num_microphones))


__all__ = ["parse_mics", "select_channels"]
