"""The suite's xdist set-up (tests/conftest.py): shared work stays on one worker, the rest is
spread over the workers.

A small suite runs with ``pytest -n 2`` in a subprocess, with the suite's hooks in its conftest;
every test logs its worker, and the module fixture logs each time it is built.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("xdist")

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
from tests.conftest import (pytest_collection_modifyitems, pytest_configure_node,
                            pytest_unconfigure, pytest_xdist_make_scheduler)
"""

# Every test and fixture build appends "what worker" to log.txt (appends of one short line
# from two processes do not interleave).
SUITE = '''
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("log.txt")


def log(what):
    with LOG.open("a") as stream:
        stream.write(f"{what} {os.environ['PYTEST_XDIST_WORKER']}\\n")


@pytest.fixture(scope="module")
def model():
    log("built-model")
    return 42


@pytest.mark.parametrize("i", range(6))
def test_shares(model, i):
    log(f"shares-{i}")


@pytest.mark.parametrize("i", range(4))
@pytest.mark.xdist_group("doc")
def test_doc_block(i):
    log(f"doc-{i}")


@pytest.mark.parametrize("i", range(12))
def test_free(i):
    log(f"free-{i}")
'''


def _run(folder: Path, *args: str) -> list[tuple[str, str]]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(folder)])}
    environment.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", *args], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "22 passed" in done.stdout, done.stdout[-3000:]
    lines = (folder / "log.txt").read_text().split("\n")
    (folder / "log.txt").unlink()
    return [tuple(line.split()) for line in lines if line]  # type: ignore[misc]


@pytest.mark.parametrize("dist", [[], ["--dist", "loadgroup"]], ids=["n2", "n2-loadgroup"])
def test_module_fixture_users_and_a_marked_group_stay_on_one_worker_in_order(
        tmp_path: Path, dist: list[str]) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE), encoding="utf-8")
    log = _run(tmp_path, "-n", "2", *dist)

    assert [what for what, _ in log].count("built-model") == 1  # built once, not per worker
    for prefix, count in (("shares-", 6), ("doc-", 4)):
        group = [(what, worker) for what, worker in log if what.startswith(prefix)]
        assert [what for what, _ in group] == [f"{prefix}{i}" for i in range(count)]
        assert len({worker for _, worker in group}) == 1, group
    model_worker = next(worker for what, worker in log if what == "built-model")
    assert {worker for what, worker in log if what.startswith("shares-")} == {model_worker}
    # The ungrouped tests are still handed to both workers.
    assert sorted(what for what, _ in log if what.startswith("free-")) == sorted(
        f"free-{i}" for i in range(12))
    assert {worker for _, worker in log} == {"gw0", "gw1"}
