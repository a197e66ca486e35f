"""The README's Python example runs as written, and its config example validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import optiplug

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_python_example_runs():
    [example, *_] = blocks("python")
    exec(compile(example, str(README), "exec"), {})


def test_readme_yaml_example_is_a_valid_config(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text(blocks("yaml")[0], encoding="utf-8")
    specs = optiplug.validate_config(path)
    assert [(s.kind, s.name) for s in specs] == [("optimizer", "adamw"), ("scheduler", "cosine")]
    with pytest.raises(optiplug.ConfigError):
        optiplug.validate_config({"optimizer": {"name": "adamw", "betas": [0.9, 1.0]}})
