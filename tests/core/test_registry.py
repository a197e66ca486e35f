"""Registry: discovery from real distributions, laziness, conflicts, broken plugins, switches."""

from __future__ import annotations

import threading
import warnings
from typing import Literal

import pytest

import optiplug
from tests.core import plugin_sources as src


def toy(dist: str, name: str = "toy") -> str:
    return src.TOY_OPTIMIZER.format(dist=dist, name=name)


def test_third_party_distribution_is_discovered_with_its_name_and_version(
        make_dist, fresh_registry):
    make_dist("acme-toys", "2.3.1", entry_points={"optimizer.toy": "acme_toy"},
              modules={"acme_toy": toy("acme-toys")})
    registry = fresh_registry()
    technique = registry.get("optimizer", "toy")
    assert technique.origin is not None
    assert (technique.origin.distribution, technique.origin.version) == ("acme-toys", "2.3.1")
    assert technique.origin.plugin == "optimizer.toy"
    assert "toy" in registry.names("optimizer")
    assert "relu" in registry.names("activation")  # the builtins come the same way
    relu = registry.get("activation", "relu")
    assert relu.origin is not None and relu.origin.distribution == "optiplug"


def test_build_from_third_party_plugin_validates_then_calls_the_builder(
        make_dist, fresh_registry):
    make_dist("acme-toys", entry_points={"optimizer.toy": "acme_toy"},
              modules={"acme_toy": toy("acme-toys")})
    registry = fresh_registry()
    dist, spec, params = optiplug.build({"kind": "optimizer", "name": "toy", "lr": 0.5},
                                        params=[1, 2], registry=registry)
    assert dist == "acme-toys" and spec.lr == 0.5 and params == [1, 2]
    assert spec.betas == (0.9, 0.999)


def test_two_plugins_claiming_one_name_is_an_error_naming_both_distributions(
        make_dist, fresh_registry, monkeypatch):
    make_dist("first-dist", "1.0", entry_points={"optimizer.toy": "first_toy"},
              modules={"first_toy": toy("first-dist")})
    make_dist("second-dist", "2.0", entry_points={"toys": "second_toy"},
              modules={"second_toy": toy("second-dist")})
    registry = fresh_registry()
    with pytest.raises(optiplug.PluginError) as info:
        registry.get("optimizer", "toy")
    message = str(info.value)
    assert "first-dist 1.0" in message and "second-dist 2.0" in message
    assert "OPTIPLUG_PREFER" in message
    [conflict] = registry.conflicts()
    assert (conflict.kind, conflict.name) == ("optimizer", "toy")

    registry.prefer("optimizer", "toy", "second-dist")
    chosen = registry.get("optimizer", "toy")
    assert chosen.origin is not None and chosen.origin.distribution == "second-dist"

    monkeypatch.setenv("OPTIPLUG_PREFER", "optimizer.toy=first_dist")
    chosen = fresh_registry().get("optimizer", "toy")
    assert chosen.origin is not None and chosen.origin.distribution == "first-dist"


def test_disabling_one_claimant_resolves_a_conflict(make_dist, fresh_registry, monkeypatch):
    make_dist("first-dist", entry_points={"optimizer.toy": "first_toy"},
              modules={"first_toy": toy("first-dist")})
    make_dist("second-dist", entry_points={"toys": "second_toy"},
              modules={"second_toy": toy("second-dist")})
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "first-dist")
    chosen = fresh_registry().get("optimizer", "toy")
    assert chosen.origin is not None and chosen.origin.distribution == "second-dist"


@pytest.mark.parametrize(("source", "phase", "error"), [
    (src.RAISES_ON_IMPORT, "import", "RuntimeError: boom at import"),
    (src.RAISES_IN_HOOK, "optiplug_activations", "ValueError: boom in hook"),
    (src.RETURNS_GARBAGE, "optiplug_activations", "must return a list of Technique"),
    (src.MISSING_DEPENDENCY, "import", "package_that_is_not_installed_anywhere"),
    (src.UNKNOWN_HOOK, "register", "unknown hook 'optiplug_optimisers'"),
])
def test_broken_plugin_is_recorded_and_everything_else_keeps_working(
        make_dist, fresh_registry, monkeypatch, source, phase, error):
    make_dist("bad-dist", "0.1", entry_points={"activation.bad": "bad_plugin"},
              modules={"bad_plugin": source})
    make_dist("good-dist", entry_points={"optimizer.toy": "good_toy"},
              modules={"good_toy": toy("good-dist")})
    registry = fresh_registry()
    assert registry.get("optimizer", "toy").origin.distribution == "good-dist"  # type: ignore
    assert registry.get("activation", "relu").name == "relu"
    [record] = [r for r in registry.broken() if r.distribution == "bad-dist"]
    assert (record.plugin, record.version, record.phase) == ("activation.bad", "0.1", phase)
    assert error in record.error
    with pytest.raises(optiplug.PluginError, match="bad-dist"):
        registry.get("activation", "bad")

    monkeypatch.setenv("OPTIPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(optiplug.PluginError, match=r"bad-dist 0\.1") as info:
        fresh_registry().names("optimizer")
    assert info.value.distribution == "bad-dist"


def test_strict_failure_leaves_no_half_loaded_registry(make_dist, fresh_registry):
    make_dist("bad-dist", entry_points={"zz.bad": "bad_plugin"},
              modules={"bad_plugin": src.RAISES_ON_IMPORT})
    registry = fresh_registry(strict=True)
    for _ in range(2):  # a retry raises again instead of seeing a partial state
        with pytest.raises(optiplug.PluginError):
            registry.names("optimizer")
    assert registry.pm.get_plugins() == set()


def test_autoload_disabled_loads_only_allowed_entry_points(
        make_dist, fresh_registry, monkeypatch):
    make_dist("acme-toys", entry_points={"optimizer.toy": "acme_toy"},
              modules={"acme_toy": toy("acme-toys")})
    monkeypatch.setenv("OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = fresh_registry()
    assert registry.techniques() == []
    assert [b.name for b in registry.backends()] == ["torch", "numpy"]  # essential, always
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "acme-toys,activation.relu")
    registry = fresh_registry()
    assert {(t.kind, t.name) for t in registry.techniques()} == {
        ("optimizer", "toy"), ("activation", "relu")}


def test_allow_list_accepts_patterns_and_deny_list_wins(make_dist, fresh_registry, monkeypatch):
    make_dist("acme-toys", entry_points={"optimizer.toy": "acme_toy"},
              modules={"acme_toy": toy("acme-toys")})
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "optimizer.*,activation.relu")
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "acme-toys")
    registry = fresh_registry()
    assert "toy" not in registry.names("optimizer")
    assert registry.names("activation") == ["relu"]
    with pytest.raises(optiplug.ConfigError, match="disabled by"):
        registry.get("optimizer", "toy")


def test_a_switch_name_that_matches_nothing_is_warned_about(fresh_registry, monkeypatch):
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "no-such-plugin")
    with pytest.warns(optiplug.OptiplugWarning, match="no-such-plugin.*matches no entry point"):
        fresh_registry().names("activation")
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "activation.relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "relu" not in fresh_registry().names("activation")


class InProcessSpec(optiplug.ActivationSpec):
    """An activation registered from a notebook."""

    name: Literal["scaled"] = "scaled"
    factor: optiplug.PositiveFloat = 2.0
    """Multiplier."""


def scaled_numpy(spec: InProcessSpec) -> float:
    return spec.factor


IN_PROCESS = optiplug.Technique(kind="activation", name="scaled", spec=InProcessSpec,
                                builders={"numpy": scaled_numpy}, summary="Scales its input.")


def test_in_process_registration_builds_and_clashes_need_override(fresh_registry):
    registry = fresh_registry()
    assert registry.register(IN_PROCESS) is IN_PROCESS
    assert optiplug.build({"kind": "activation", "name": "scaled", "factor": 3.0},
                          registry=registry) == 3.0
    info = registry.get("activation", "scaled").origin
    assert info is not None and info.distribution is None
    with pytest.raises(optiplug.PluginError, match="already provided"):
        registry.register(IN_PROCESS)

    class ReluSpec(optiplug.ActivationSpec):
        name: Literal["relu"] = "relu"

    mine = optiplug.Technique(kind="activation", name="relu", spec=ReluSpec,
                              builders={"numpy": lambda spec: "mine"}, summary="My relu.")
    with pytest.raises(optiplug.PluginError, match=r"optiplug 0\.1\.0"):
        registry.register(mine)
    registry.register(mine, override=True)
    assert optiplug.build({"kind": "activation", "name": "relu"}, registry=registry) == "mine"
    registry.unregister("activation.scaled")
    with pytest.raises(optiplug.ConfigError, match="unknown activation 'scaled'"):
        registry.get("activation", "scaled")


def test_descriptor_mistakes_are_caught_when_the_descriptor_is_made():
    with pytest.raises(TypeError, match="spec name 'scaled' differs"):
        optiplug.Technique(kind="activation", name="other", spec=InProcessSpec,
                           builders={"numpy": scaled_numpy}, summary="x")
    with pytest.raises(TypeError, match="not a optimizer spec"):
        optiplug.Technique(kind="optimizer", name="scaled", spec=InProcessSpec,
                           builders={"numpy": scaled_numpy}, summary="x")
    with pytest.raises(TypeError, match="builders"):
        optiplug.Technique(kind="activation", name="scaled", spec=InProcessSpec, builders={},
                           summary="x")


def test_unknown_names_suggest_close_matches(fresh_registry):
    registry = fresh_registry()
    with pytest.raises(optiplug.ConfigError, match="did you mean 'relu'"):
        registry.get("activation", "rleu")
    with pytest.raises(optiplug.ConfigError, match="did you mean 'optimizer'"):
        registry.get("optimiser", "adam")


def test_concurrent_first_lookups_see_one_consistent_registry(make_dist, fresh_registry):
    make_dist("slow-dist", entry_points={"optimizer.toy": "slow_toy"},
              modules={"slow_toy": "import time\ntime.sleep(0.2)\n" + toy("slow-dist")})
    registry = fresh_registry()
    results: list[object] = []
    barrier = threading.Barrier(8)

    def look() -> None:
        barrier.wait()
        results.append((registry.get("optimizer", "toy"), tuple(registry.names("activation"))))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 and len(set(map(repr, results))) == 1
    assert registry.broken() == [] or all(r.distribution == "optiplug"
                                          for r in registry.broken())


def test_lifecycle_built_hook_sees_every_build(fresh_registry):
    registry = fresh_registry()
    seen: list[tuple[str, str, str]] = []

    class Observer:
        @optiplug.hookimpl
        def optiplug_built(self, technique, spec, backend, obj):
            seen.append((technique.name, backend, type(obj).__name__))

    registry.register(Observer(), name="observer")
    registry.register(IN_PROCESS)
    optiplug.build({"kind": "activation", "name": "scaled"}, registry=registry)
    optiplug.build({"kind": "activation", "name": "relu"}, registry=registry)
    assert seen == [("scaled", "numpy", "float"), ("relu", "numpy", "NumpyReLU")]
