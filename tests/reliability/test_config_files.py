"""Malformed and hostile config files, and configs that try to import, call or evaluate code.

Every bad file gives one ``optiplug.ConfigError`` from the library and, from ``optiplug
validate``, exit status 1 with one ``FILE: problem`` line per problem on stderr and no
traceback. Nothing a config says is imported, called or evaluated: a canary module that
writes a marker file when imported or called stays untouched whatever the config tries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optiplug
from optiplug.cli import main

VALID_YAML = "optimizer:\n  name: adam\n  lr: 0.001\n  betas: [0.9, 0.999]\n"
VALID_TOML = '[optimizer]\nname = "adam"\nlr = 0.001\nbetas = [0.9, 0.999]\n'
VALID_JSON = '{"optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999]}}\n'

BOMB = textwrap.dedent("""\
    a: &a [x, x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
    optimizer: {name: adam, betas: *g}
    """)

# (file name, content, a phrase the one error line must contain)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("truncated.yaml", VALID_YAML[:-8].encode(), "malformed YAML"),
    ("truncated.toml", VALID_TOML[:-8].encode(), "malformed TOML"),
    ("truncated.json", VALID_JSON[:-8].encode(), "malformed JSON"),
    ("python_object.yaml", b"optimizer: !!python/object/apply:os.system ['echo pwned']\n",
     "malformed YAML"),
    ("python_name.yaml", b"optimizer: {name: !!python/name:os.system }\n", "malformed YAML"),
    ("python_module.yaml", b"optimizer: !!python/module:os\n", "malformed YAML"),
    ("python_new.yaml", b"optimizer: !!python/object/new:subprocess.Popen [[ls]]\n",
     "malformed YAML"),
    ("duplicate.yaml", b"optimizer:\n  name: adam\n  lr: 0.1\n  lr: 0.2\n", "duplicate key"),
    ("duplicate.json", b'{"optimizer": {"name": "adam", "lr": 0.1, "lr": 0.2}}',
     "duplicate key"),
    ("duplicate.toml", b'[optimizer]\nname = "adam"\nlr = 0.1\nlr = 0.2\n', "malformed TOML"),
    ("not_utf8.yaml", b"optimizer:\n  name: ad\xff\xfeam\n", "not UTF-8"),
    ("latin1.json", '{"optimizer": {"name": "caf\u00e9"}}'.encode("latin-1"), "not UTF-8"),
    ("deep.yaml", b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested"),
    ("deep.json", b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested"),
    ("deep.toml", b"a = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested"),
    ("deep_ok_parse.yaml", ("optimizer: {name: adam, betas: " + "[" * 60 + "]" * 60 + "}\n")
     .encode(), "nested more than"),
    ("bomb.yaml", BOMB.encode(), "more than"),
    ("recursive.yaml", b"optimizer: &loop {name: adam, betas: [*loop]}\n", "nested more than"),
    ("bigint.yaml", b"optimizer: {name: adam, lr: " + b"9" * 5000 + b"}\n", "malformed YAML"),
    ("bigint.toml", b'[optimizer]\nname = "adam"\nlr = ' + b"9" * 5000 + b"\n", "TOML"),
    ("bigint.json", b'{"optimizer": {"name": "adam", "lr": ' + b"9" * 5000 + b"}}", "digits"),
    ("nan.json", b'{"optimizer": {"name": "adam", "lr": NaN}}', "NaN is not valid JSON"),
    ("bad_date.yaml", b"optimizer: {name: adam, lr: 2001-02-30}\n", "malformed YAML"),
    ("empty.yaml", b"", "must be a mapping"),
    ("list.json", b"[1, 2, 3]", "must be a mapping"),
    ("scalar.toml", b"", "empty config"),
    ("garbage.yaml", bytes(range(256)), "not UTF-8"),
    ("nul.yaml", b"optimizer:\n  name: adam\x00\n", "malformed YAML"),
    ("config.py", b"import os\nos.system('echo pwned')\n", "unsupported config file type"),
]


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _check_cli_lines(path: Path, exit_code: int, err: str, out: str, phrase: str) -> None:
    assert exit_code == 1, err
    assert out == ""
    lines = err.splitlines()
    assert lines, "no error printed"
    assert "Traceback" not in err
    for line in lines:
        assert line.startswith(f"{path}: ") or line.startswith("optiplug: error: "), line
        assert len(line) < 1000, f"an error line is {len(line)} characters long"
    assert phrase in err, err


@pytest.mark.parametrize(("name", "content", "phrase"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_file_gives_one_config_error_and_one_cli_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes,
        phrase: str) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.validate_config(path)
    assert phrase in str(caught.value)
    assert str(path) in str(caught.value)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    _check_cli_lines(path, 1, captured.err, captured.out, phrase)


def test_a_100_megabyte_file_is_refused_before_it_is_read(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.write(VALID_YAML.encode())
        stream.truncate(100 * 1024 * 1024)  # sparse: cheap to make, 100 MB by its size
    with pytest.raises(optiplug.ConfigError, match="at most"):
        optiplug.load_config(path)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    _check_cli_lines(path, 1, captured.err, captured.out, "bytes")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    with pytest.raises(optiplug.ConfigError, match="not a regular file"):
        optiplug.load_config(path)


def test_several_bad_values_give_one_line_each(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "three.yaml", (
        b"optimizer:\n  name: adam\n  lr: -1\n  betas: [0.9, 1.5]\n  _target_: os.system\n"
        b"scheduler:\n  name: no_such_scheduler\n"))
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.validate_config(path)
    paths = {issue.path for issue in caught.value.issues}
    assert {"optimizer.lr", "optimizer.betas.1", "optimizer._target_",
            "scheduler.name"} <= paths
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == len(caught.value.issues) >= 4
    for issue_path in ("optimizer.lr", "optimizer.betas.1", "optimizer._target_",
                       "scheduler.name"):
        assert sum(line.startswith(f"{path}: {issue_path}:") for line in err.splitlines()) == 1


def test_the_real_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    for name, content, phrase in (MALFORMED[3], MALFORMED[10], MALFORMED[16]):
        path = _write(tmp_path, name, content)
        result = subprocess.run([sys.executable, "-m", "optiplug", "validate", str(path)],
                                capture_output=True, text=True, env=environment, timeout=120,
                                check=False)
        _check_cli_lines(path, result.returncode, result.stderr, result.stdout, phrase)


FORMATS = {
    ".yaml": VALID_YAML,
    ".toml": VALID_TOML,
    ".json": VALID_JSON,
}


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_damaged_files_load_or_raise_config_error(tmp_path: Path, suffix: str) -> None:
    """Truncations, byte flips and insertions of a valid file: a dict or a ConfigError."""
    original = FORMATS[suffix].encode()
    path = tmp_path / f"damaged{suffix}"

    insertions = [b"!!python/object:os.system ", b"&a ", b"*a", b"{", b"[", b'"', b"'", b"\\",
                  b"\x00", b"\xff", b"=", b":", b"\n  - ", b"NaN", b"1e999", b"9" * 5000]
    truncated = st.integers(0, len(original)).map(lambda n: original[:n])
    overwritten = st.tuples(st.integers(0, len(original) - 1),
                            st.binary(min_size=1, max_size=4)).map(
        lambda edit: original[:edit[0]] + edit[1] + original[edit[0] + len(edit[1]):])
    inserted = st.tuples(st.integers(0, len(original)), st.sampled_from(insertions)).map(
        lambda edit: original[:edit[0]] + edit[1] + original[edit[0]:])

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(truncated, overwritten, inserted))
    def run(content: bytes) -> None:
        path.write_bytes(content)
        try:
            data = optiplug.load_config(path)
        except optiplug.ConfigError as exc:
            assert str(path) in str(exc)
            return
        assert isinstance(data, dict)
        try:
            optiplug.validate_config(data)
        except optiplug.ConfigError as exc:
            assert exc.issues

    run()


# --------------------------------------------------------------- nothing is imported or run
CANARY = """
from pathlib import Path
MARKER = Path({marker!r})
MARKER.write_text("imported")


def fire(*args, **kwargs):
    MARKER.write_text("called")


class Thing:
    def __init__(self, *args, **kwargs):
        fire()
"""

NO_CODE_CONFIGS: list[dict[str, object]] = [
    {"kind": "optimizer", "name": "canary_optiplug.fire"},
    {"kind": "optimizer", "name": "canary_optiplug:fire"},
    {"kind": "optimizer", "name": "canary_optiplug"},
    {"kind": "optimizer", "name": "__import__('canary_optiplug').fire()"},
    {"kind": "canary_optiplug.fire", "name": "adam"},
    {"kind": "optimizer", "name": "adam", "_target_": "canary_optiplug.fire"},
    {"kind": "optimizer", "name": "adam", "_target_": "canary_optiplug.Thing", "_args_": [1]},
    {"kind": "optimizer", "name": "adam", "_partial_": True, "_target_": "canary_optiplug.fire"},
    {"kind": "optimizer", "name": "adam", "lr": "__import__('canary_optiplug').fire()"},
    {"kind": "optimizer", "name": "adam", "lr": "${canary_optiplug.fire}"},
    {"kind": "optimizer", "name": "adam", "__class__": "canary_optiplug.Thing"},
    {"kind": "optimizer", "name": "chain",
     "transforms": [{"name": "canary_optiplug.fire"}]},
    {"kind": "optimizer", "name": "chain",
     "transforms": [{"name": "scale", "_target_": "canary_optiplug.fire"}]},
    {"kind": "initializer", "name": "canary_optiplug.Thing"},
    {"kind": "activation", "name": "torch.nn.ReLU"},
    {"kind": "activation", "name": "optiplug.plugins.activations.relu"},
    {"kind": "activation", "name": "optiplug.plugins.activations.relu:build_numpy"},
    {"_target_": "canary_optiplug.fire"},
]

NO_CODE_YAML = [
    "optimizer: !!python/object/apply:canary_optiplug.fire []\n",
    "optimizer: {name: !!python/name:canary_optiplug.fire ''}\n",
    "optimizer: !!python/module:canary_optiplug\n",
    "optimizer: !!python/object/new:canary_optiplug.Thing []\n",
    "optimizer: !!python/object:canary_optiplug.Thing {}\n",
    "optimizer: {name: adam, lr: !!python/object/apply:canary_optiplug.fire []}\n",
    "optimizer: !<tag:yaml.org,2002:python/object/apply:canary_optiplug.fire> []\n",
    "%TAG !p! tag:yaml.org,2002:python/\n---\noptimizer: !p!object/apply:canary_optiplug.fire []\n",
]


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "canary"
    folder.mkdir()
    marker = tmp_path / "canary-marker"
    (folder / "canary_optiplug.py").write_text(CANARY.format(marker=str(marker)),
                                               encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    yield marker
    sys.modules.pop("canary_optiplug", None)


@pytest.mark.parametrize("config", NO_CODE_CONFIGS, ids=range(len(NO_CODE_CONFIGS)))
def test_a_config_cannot_import_or_call_anything(canary: Path, config: dict[str, object]
                                                 ) -> None:
    with pytest.raises(optiplug.ConfigError):
        optiplug.validate_config(config)
    with pytest.raises(optiplug.ConfigError):
        optiplug.build(config, backend="numpy", params={"w": __import__("numpy").zeros(2)})
    assert "canary_optiplug" not in sys.modules
    assert not canary.exists(), canary.read_text()


@pytest.mark.parametrize("text", NO_CODE_YAML, ids=range(len(NO_CODE_YAML)))
def test_yaml_tags_cannot_import_or_call_anything(canary: Path, tmp_path: Path, text: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "tagged.yaml", text.encode())
    with pytest.raises(optiplug.ConfigError, match="malformed YAML"):
        optiplug.load_config(path)
    with pytest.raises(optiplug.ConfigError):
        optiplug.to_spec(path)
    assert main(["validate", str(path)]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert "canary_optiplug" not in sys.modules
    assert not canary.exists()


def test_a_file_just_over_the_limit_is_refused_and_one_at_the_limit_is_read(
        tmp_path: Path) -> None:
    from optiplug.config import MAX_CONFIG_BYTES

    body = '{"optimizer": {"name": "adam", "lr": 0.001}}'
    at_limit = tmp_path / "at_limit.json"
    at_limit.write_text(body + " " * (MAX_CONFIG_BYTES - len(body)), encoding="utf-8")
    assert optiplug.load_config(at_limit)["optimizer"]["lr"] == 0.001
    over = tmp_path / "over.json"
    over.write_text(body + " " * (MAX_CONFIG_BYTES - len(body) + 1), encoding="utf-8")
    with pytest.raises(optiplug.ConfigError, match=f"at most {MAX_CONFIG_BYTES} bytes"):
        optiplug.load_config(over)
