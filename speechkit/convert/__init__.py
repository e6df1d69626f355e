"""Importers of official checkpoints into speechkit's safetensors format.

Each importer lives in its own module and reads the original file with
``torch.load(weights_only=True)`` (nothing is unpickled beyond tensors and plain containers):

- :mod:`speechkit.convert.asteroid`: asteroid ``ConvTasNet`` (``.pth`` or ``pytorch_model.bin``)
  -> ``conv_tasnet``.
- :mod:`speechkit.convert.clearervoice`: ClearerVoice-Studio MossFormer2 separation
  (``last_best_checkpoint.pt``) -> ``mossformer2``.
- :mod:`speechkit.convert.tiger`: official TIGER (Hugging Face folder with ``config.json``, or a
  ``.safetensors`` / ``.bin`` / ``.pth`` beside it) -> ``tiger``.
- :mod:`speechkit.convert.sgmse`: official SGMSE+ Lightning ``.ckpt`` (EMA weights) -> ``sgmse``.

Use :func:`convert_checkpoint` to dispatch by source name.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import CheckpointError

#: source name -> "module:function" taking (path, out_path=None, overwrite=False, **options) -> model
CONVERTERS: Mapping[str, str] = MappingProxyType(
    {
        "asteroid": "speechkit.convert.asteroid:convert_asteroid_checkpoint",
        "tiger": "speechkit.convert.tiger:convert_tiger_checkpoint",
        "deftan2": "speechkit.convert.deftan2:convert_deftan2_checkpoint",
        "clearervoice": "speechkit.convert.clearervoice:convert_clearervoice_checkpoint",
        "sgmse": "speechkit.convert.sgmse:convert_sgmse_checkpoint",
    }
)


def convert_checkpoint(
    source: str,
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Any:
    """Convert the ``source``-format checkpoint at ``path`` (and save it to ``out_path`` if given).

    ``options`` go to the converter (asteroid: ``framing="asteroid"`` or ``"causal"``).
    Returns the converted :class:`~speechkit.models.base.SpeechModel`.
    """
    if source not in CONVERTERS:
        raise CheckpointError(f"no converter for {source!r} checkpoints (known: {', '.join(sorted(CONVERTERS))})")
    module_name, function_name = CONVERTERS[source].split(":")
    converter = getattr(importlib.import_module(module_name), function_name)
    return converter(path, out_path=out_path, overwrite=overwrite, **options)


__all__ = ["CONVERTERS", "convert_checkpoint"]
