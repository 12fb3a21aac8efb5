"""Run the `worldmodels` command line from tests, in a subprocess, the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
COMMAND = [sys.executable, "-m", "cli"]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: the repo (and tests' custom envs) importable, headless MuJoCo."""
    return dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `worldmodels ARGS...` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [*COMMAND, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def start_cli(*args: str) -> subprocess.Popen:
    """Start `worldmodels ARGS...` in the background (output discarded), e.g. to kill it mid-run."""
    return subprocess.Popen(
        [*COMMAND, *args], cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
