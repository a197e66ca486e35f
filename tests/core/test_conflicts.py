"""Two distributions claiming one technique: a switch disables one entry point of one
distribution, and a bare ``optiplug compare`` leaves the contested name out with a message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import optiplug
from tests.core import plugin_sources as src

MakeDist = Callable[..., Path]


def _two_claimants(make_dist: MakeDist) -> None:
    # The same entry point name in both distributions, as two forks of one plugin would have.
    for dist in ("first-dist", "second-dist"):
        module = f"{dist.replace('-', '_')}_toy"
        make_dist(dist, entry_points={"optimizer.toy": module},
                  modules={module: src.TOY_OPTIMIZER.format(dist=dist, name="toy")})


def test_a_switch_names_one_entry_point_of_one_distribution(
        make_dist: MakeDist, fresh_registry: Callable[..., optiplug.Registry],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _two_claimants(make_dist)
    assert [c.name for c in fresh_registry().conflicts()] == ["toy"]
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "second_dist:optimizer.toy")
    registry = fresh_registry()
    assert registry.conflicts() == []
    chosen = registry.get("optimizer", "toy")
    assert chosen.origin is not None and chosen.origin.distribution == "first-dist"
    # The entry point name alone still disables it in every distribution.
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "optimizer.toy")
    assert "toy" not in fresh_registry().names("optimizer")
    # The allow-list takes the same form.
    monkeypatch.delenv("OPTIPLUG_DISABLED_PLUGINS")
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "second-dist:optimizer.*")
    only = fresh_registry()
    assert only.names("optimizer") == ["toy"]
    assert only.get("optimizer", "toy").origin.distribution == "second-dist"  # type: ignore[union-attr]


def test_the_conflict_message_names_the_precise_switch(
        make_dist: MakeDist, fresh_registry: Callable[..., optiplug.Registry]) -> None:
    _two_claimants(make_dist)
    with pytest.raises(optiplug.PluginError,
                       match="OPTIPLUG_DISABLED_PLUGINS=<distribution>:<entry point>"):
        fresh_registry().get("optimizer", "toy")


@pytest.fixture
def default_registry_reloaded() -> Iterator[None]:
    yield
    optiplug.registry().reload()


def test_bare_compare_skips_a_contested_optimizer_with_a_message(
        make_dist: MakeDist, fresh_registry: Callable[..., optiplug.Registry],
        monkeypatch: pytest.MonkeyPatch, default_registry_reloaded: None) -> None:
    from optiplug.training.compare import installed_optimizers

    _two_claimants(make_dist)
    optiplug.registry().reload()
    usable, skipped = installed_optimizers("numpy")
    assert "toy" not in usable and {"adam", "sgd"} <= set(usable)
    [message] = [line for line in skipped if line.startswith("toy ")]
    assert "provided by more than one plugin" in message
    assert "OPTIPLUG_PREFER='optimizer.toy=<distribution>'" in message
    monkeypatch.setenv("OPTIPLUG_PREFER", "optimizer.toy=first-dist")
    optiplug.registry().reload()
    usable, skipped = installed_optimizers("numpy")
    assert "toy" in usable and not [line for line in skipped if line.startswith("toy ")]
