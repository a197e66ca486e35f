"""The training subcommands keep ``optiplug --help`` light."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_command_line_imports_no_array_or_plot_library() -> None:
    script = ("import sys, optiplug.cli as cli; cli._parser(); "
              "print(sorted(m for m in ('numpy', 'torch', 'matplotlib', 'sklearn') "
              "if m in sys.modules))")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "[]"


def test_help_lists_run_and_compare_options() -> None:
    process = subprocess.run([sys.executable, "-m", "optiplug", "compare", "--help"],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 0
    assert "--vary KIND=a,b,c" in process.stdout and "--backend" in process.stdout
    process = subprocess.run([sys.executable, "-m", "optiplug", "run", "--help"],
                             capture_output=True, text=True, timeout=60)
    assert "--resume RUN_DIR" in process.stdout and "--kill-after-epoch" not in process.stdout
