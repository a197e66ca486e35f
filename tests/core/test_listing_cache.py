"""The listing cache: list/show/schema/doctor read descriptors without importing plugins,
and the stored catalog is never stale (distributions, sources and switches are its key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import optiplug
from optiplug.catalog import load_catalog
from tests.conftest import MakeDist
from tests.core import plugin_sources as src

Fresh = Callable[..., optiplug.Registry]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("OPTIPLUG_CACHE_DIR", str(folder))
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "acme-*")  # only the test distributions load
    return folder


def _toy(make_dist: MakeDist, dist: str, version: str, name: str) -> Path:
    module = f"{dist.replace('-', '_')}_{name}"
    return make_dist(dist, version, entry_points={f"optimizer.{name}": module},
                     modules={module: src.TOY_OPTIMIZER.format(name=name, dist=dist)})


def _listing(fresh: Fresh) -> tuple[bool, dict[str, tuple[str | None, str]], list[str]]:
    registry = fresh()
    catalog = load_catalog(registry)
    assert registry._state is None or not catalog.from_cache  # a hit discovers nothing
    rows = {e.name: (e.origin.version if e.origin else None, e.summary)
            for e in catalog.entries("optimizer")}
    return catalog.from_cache, rows, [b.plugin for b in catalog.broken]


def test_a_hit_imports_nothing_and_gives_what_discovery_gives(make_dist, fresh_registry, cache):
    _toy(make_dist, "acme-one", "1.0", "toy_one")
    cold = _listing(fresh_registry)
    warm = _listing(fresh_registry)
    assert (cold[0], warm[0]) == (False, True)
    assert cold[1:] == warm[1:]
    live = fresh_registry()
    assert {t.name: t.summary for t in live.techniques("optimizer")} == {
        name: summary for name, (_, summary) in warm[1].items()}
    assert cold[1]["toy_one"] == ("1.0", "Toy from acme-one.")


def test_installing_upgrading_and_editing_a_plugin_each_rebuild_it(make_dist, fresh_registry,
                                                                  cache):
    root = _toy(make_dist, "acme-one", "1.0", "toy_one")
    assert _listing(fresh_registry)[0] is False
    assert _listing(fresh_registry)[0] is True
    # A new distribution (a broken one): the miss imports it and finds it broken.
    make_dist("acme-bad", "0.1", entry_points={"activation.bad": "acme_bad_mod"},
              modules={"acme_bad_mod": src.RAISES_ON_IMPORT})
    hit, rows, broken = _listing(fresh_registry)
    assert hit is False and broken == ["activation.bad"] and "toy_one" in rows
    assert _listing(fresh_registry)[2] == ["activation.bad"]  # a hit keeps the record
    # An upgrade: a new dist-info (name and version).
    info = root / "acme_one-1.0.dist-info"
    info.rename(root / "acme_one-2.0.dist-info")
    text = (root / "acme_one-2.0.dist-info" / "METADATA").read_text().replace("1.0", "2.0")
    (root / "acme_one-2.0.dist-info" / "METADATA").write_text(text)
    hit, rows, _ = _listing(fresh_registry)
    assert hit is False and rows["toy_one"][0] == "2.0"
    # An edit of the plugin's source (as in an editable install), same size or not.
    module = root / "acme_one_toy_one.py"
    module.write_text(module.read_text().replace("Toy from", "Edited toy from"))
    stamp = time.time() + 5
    os.utime(module, (stamp, stamp))
    sys.modules.pop("acme_one_toy_one", None)
    hit, rows, _ = _listing(fresh_registry)
    assert hit is False and rows["toy_one"][1] == "Edited toy from acme-one."


def test_switches_are_part_of_the_key(make_dist, fresh_registry, cache, monkeypatch):
    _toy(make_dist, "acme-one", "1.0", "toy_one")
    _toy(make_dist, "acme-two", "1.0", "toy_two")
    assert set(_listing(fresh_registry)[1]) == {"toy_one", "toy_two"}
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "acme-two")
    hit, rows, _ = _listing(fresh_registry)
    assert hit is False and set(rows) == {"toy_one"}


def test_a_corrupt_or_foreign_cache_file_is_ignored_and_replaced(make_dist, fresh_registry,
                                                                 cache):
    _toy(make_dist, "acme-one", "1.0", "toy_one")
    _listing(fresh_registry)
    [stored] = cache.glob("catalog-*.json")
    for garbage in ("{not json", json.dumps([1, 2]), json.dumps(
            {**json.loads(stored.read_text()), "techniques": "oops"})):
        stored.write_text(garbage)
        hit, rows, _ = _listing(fresh_registry)
        assert hit is False and "toy_one" in rows
        assert json.loads(stored.read_text())["techniques"][0]["name"] == "toy_one"
    assert [p.name for p in cache.iterdir()] == [stored.name]  # no temporary file left


def test_strict_mode_raises_for_a_broken_plugin_read_from_the_cache(make_dist, fresh_registry,
                                                                     cache):
    make_dist("acme-bad", "0.1", entry_points={"activation.bad": "acme_bad_mod"},
              modules={"acme_bad_mod": src.RAISES_ON_IMPORT})
    assert _listing(fresh_registry)[2] == ["activation.bad"]
    with pytest.raises(optiplug.PluginError, match=r"acme-bad 0\.1 .*boom at import"):
        load_catalog(fresh_registry(strict=True))


def _cli(cache: Path, *args: str, code: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    env["OPTIPLUG_CACHE_DIR"] = str(cache)
    script = ("import sys, json\nfrom optiplug.cli import main\nstatus = main(sys.argv[1:])\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
              "'optiplug.plugins.'))), file=sys.stderr)\nsys.exit(status)")
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_cli_reads_the_cache_concurrently_and_imports_no_plugin_when_warm(tmp_path: Path):
    cache = tmp_path / "cache"
    # Cold and concurrent: two processes build and write the same catalog at once.
    cold = [_cli(cache, "list", "--json") for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in cold]
    assert all(process.returncode == 0 for process in cold)
    assert len({out for out, _ in outputs}) == 1
    assert any("optiplug.plugins.optimizers.adam" in err for _, err in outputs)
    warm = _cli(cache, "list", "--json")
    out, err = warm.communicate(timeout=300)
    assert out == outputs[0][0] and json.loads(err.splitlines()[-1]) == []
    rows = json.loads(out)
    assert {"adam", "pto.lion"} <= {row["name"] for row in rows}
    # show and schema of a bridged technique: computed once, then read from the cache too.
    for _ in range(2):
        shown = _cli(cache, "show", "optimizer", "pto.lion", "--json")
        out, err = shown.communicate(timeout=300)
    assert json.loads(err.splitlines()[-1]) == []
    params = {p["name"]: p for p in json.loads(out)["hyperparameters"]}
    assert params["lr"]["default"] == 1e-4 and params["lr"]["constraint"] == ">= 0.0"
    doctor = _cli(cache, "doctor")
    out, err = doctor.communicate(timeout=300)
    assert json.loads(err.splitlines()[-1]) == [] and "techniques from" in out
    assert [p.suffix for p in cache.iterdir()] == [".json"]


def test_schema_of_one_technique_by_name_or_kind_dot_name(capsys):
    from optiplug.cli import main

    assert main(["schema", "adam"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["schema", "optimizer.adam"]) == 0
    assert json.loads(capsys.readouterr().out) == by_name
    spec = optiplug.registry().get("optimizer", "adam").spec
    assert by_name["properties"] == spec.model_json_schema()["properties"]
    assert by_name["title"] == "optiplug optimizer adam"
    assert main(["schema", "adamm"]) == 1
    assert "unknown technique 'adamm'; did you mean 'adam'" in capsys.readouterr().err
