"""The one-line error convention of the recipe tools' command lines."""
from __future__ import annotations

import sys
from collections.abc import Callable

from speechkit.errors import SpeechkitError


def report(program: str, action: Callable[[], str]) -> int:
    """Run ``action``; print its message and return 0, or print ``program: error`` on one line of
    stderr and return 1 for an expected failure (bad file, bad configuration, missing key)."""
    try:
        message = action()
    except (SpeechkitError, OSError, KeyError, ValueError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0
