"""The glibc allocator setting: applied once on CPU runs, skipped when the user chose a malloc."""

from __future__ import annotations

import os
import sys

import pytest

from cifarnet.runtime import allocator
from cifarnet.runtime import device as runtime


@pytest.fixture
def fresh_allocator_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key in ("CIFARNET_SYSTEM_MALLOC", "LD_PRELOAD"):
            monkeypatch.delenv(key)


@pytest.mark.skipif(
    sys.platform != "linux" or not allocator._is_glibc(), reason="glibc-only setting"
)
def test_applied_on_glibc_and_only_once(
    fresh_allocator_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert allocator.keep_freed_memory_in_process() is True
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: calls.append(name))
    assert allocator.keep_freed_memory_in_process() is True
    assert calls == []  # the second call does not touch libc again


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CIFARNET_SYSTEM_MALLOC", "1"),
        ("MALLOC_ARENA_MAX", "2"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ],
)
def test_user_choice_is_left_alone(
    fresh_allocator_state: None, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("libc was touched"))
    assert allocator.keep_freed_memory_in_process() is False


def test_cpu_runtimes_apply_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory_in_process", lambda: calls.append(1))
    rt = runtime.resolve_runtime("cpu", "fp32")
    assert rt.device.type == "cpu"
    assert calls == [1]
    assert runtime.resolve_device("cpu").type == "cpu"  # benchmark resolves the device alone
    assert calls == [1, 1]
