"""speechkit.memory: glibc keeps large freed buffers for reuse; the command line turns it on."""
from __future__ import annotations

import platform

import pytest

import speechkit
from speechkit import cli, memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retain_freed_memory_takes_effect_on_glibc() -> None:
    assert speechkit.retain_freed_memory() is True


def test_retain_freed_memory_is_a_no_op_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.retain_freed_memory() is False
    monkeypatch.setattr(memory.platform, "system", lambda: "Darwin")
    assert memory.retain_freed_memory() is False


def test_the_command_line_retains_freed_memory_before_running_a_command(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(True) or True)
    assert cli.main(["models"]) == 0
    assert calls == [True]
    capsys.readouterr()
    assert cli.main([]) == cli.EXIT_USAGE and calls == [True]  # help only: nothing to run
