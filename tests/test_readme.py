"""The README's technique table lists every builtin technique with its backends.

Every code block of the README (and of CONTRIBUTING.md and docs/) is run by tests/test_docs.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import optiplug

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_table_lists_every_builtin_technique_with_its_backends():
    text = README.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| (\w+) \| `(\w+)` \| ([\w, ]+) \|", text, re.M))
    builtins = {(t.kind, t.name, ", ".join(t.backends))
                for t in optiplug.registry().techniques()
                if t.origin is not None and t.origin.distribution == "optiplug"}
    assert builtins <= rows, sorted(builtins - rows)


def test_readme_table_is_what_optiplug_list_markdown_prints(capsys, monkeypatch):
    """The table is generated from the registry (the bridged pto.* catalogue left out: the
    suite's conftest disables it, as the README's command does)."""
    from optiplug.cli import main

    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "bridge.pytorch_optimizer")
    assert main(["list", "--distribution", "optiplug", "--markdown"]) == 0
    table = capsys.readouterr().out
    builtins = [t for t in optiplug.registry().techniques()
                if t.origin is not None and t.origin.distribution == "optiplug"]
    assert table.count("\n") == 2 + len(builtins) > 90
    assert table in README.read_text(encoding="utf-8")


def test_readme_train_yaml_builds_on_the_readme_model(tmp_path: Path):
    namespace: dict[str, object] = {}
    exec(compile(blocks("python")[0], str(README), "exec"), namespace)
    model = namespace["model"]
    path = tmp_path / "train.yaml"
    path.write_text(blocks("yaml")[0], encoding="utf-8")
    for params in (model, model.named_parameters()):  # type: ignore[attr-defined]
        built = optiplug.build(path, params=params)
        assert isinstance(built, optiplug.Built)
        assert built.scheduler.optimizer is built.optimizer  # type: ignore[attr-defined]
        settings = {name: (group["lr"], group["weight_decay"])
                    for group in built.optimizer.param_groups
                    for name in group["param_names"]}
        assert settings == {"0.weight": (0.001, 0.05), "0.bias": (0.001, 0.0),
                            "2.weight": (0.01, 0.05), "2.bias": (0.01, 0.0)}
