"""The registry under threads: a plugin thread registers and unregisters while others read.

Before copy-on-write snapshots, ``names()`` raised ``RuntimeError: dictionary changed size
during iteration`` within a few hundred cycles, and ``techniques()`` showed a plugin's
techniques half registered.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pytest

import optiplug
from optiplug.registry import Registry

PLUGIN = "threadtest"
COUNT = 12  # techniques the plugin contributes in one registration
CYCLES = 300  # register + unregister rounds of the plugin thread


def _spec(index: int) -> type[optiplug.OptimizerSpec]:
    name = f"threadtest_{index}"
    return type(f"ThreadTest{index}Spec", (optiplug.OptimizerSpec,), {
        "__annotations__": {"name": Literal[name]},  # type: ignore[valid-type]
        "name": name, "__doc__": "A technique registered and removed by a thread."})


class _Plugin:
    """Contributes :data:`COUNT` optimizers through the ordinary hook."""

    def __init__(self) -> None:
        self.techniques = [
            optiplug.Technique(kind="optimizer", name=f"threadtest_{i}", spec=_spec(i),
                               builders={"numpy": lambda spec, params: params},
                               summary="A technique registered and removed by a thread.")
            for i in range(COUNT)]

    @optiplug.hookimpl
    def optiplug_optimizers(self) -> list[optiplug.Technique]:
        return self.techniques


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every few microseconds, so that races show within a few cycles."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_readers_never_see_a_registry_changing_under_them(fast_switching: None) -> None:
    registry = Registry()
    builtin = set(registry.names("optimizer"))
    assert {"sgd", "adam"} <= builtin
    plugin = _Plugin()
    done = threading.Event()
    errors: list[BaseException] = []
    seen_counts: set[int] = set()
    reads = [0]

    def register_and_unregister() -> None:
        try:
            for _ in range(CYCLES):
                registry.register(plugin, name=PLUGIN)
                registry.unregister(PLUGIN)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        start, grad = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.25, -1.0])
        try:
            while not done.is_set():
                names = registry.names("optimizer")
                listed = [t.name for t in registry.techniques("optimizer")]
                ours = {n for n in listed if n.startswith("threadtest_")}
                # A registration is seen whole or not at all, and builtins never flicker.
                seen_counts.add(len(ours))
                assert len(ours) in (0, COUNT), sorted(ours)
                assert builtin <= set(names) and builtin <= set(listed)
                weights = start.copy()
                optimizer = registry.build(registry.get("optimizer", "sgd").spec(lr=0.1),
                                           params={"w": weights})
                optimizer.step([grad])
                np.testing.assert_array_equal(weights, start - 0.1 * grad)  # p -= lr * g
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register_and_unregister)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, f"{type(errors[0]).__name__}: {errors[0]}"
    assert reads[0] > 0
    assert PLUGIN not in [p.plugin for p in registry.plugins()]
    assert set(registry.names("optimizer")) == builtin


def _names(registry: Registry) -> set[str]:
    return {name for name in registry.names("optimizer") if name.startswith("threadtest_")}


def test_a_failed_registration_publishes_nothing(fast_switching: None) -> None:
    registry = Registry()
    registry.register(_Plugin(), name=PLUGIN)
    before = registry.techniques("optimizer")
    clash: Any = _Plugin()
    with pytest.raises(optiplug.PluginError, match="already provided"):
        registry.register(clash, name="other")
    assert registry.techniques("optimizer") == before
    assert len(_names(registry)) == COUNT
