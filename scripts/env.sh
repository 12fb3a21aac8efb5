#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv from the pinned constraints.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only reinstalls when the pins change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
stamp_now="$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp_now" ]; then
    echo "[env] creating .venv (first run takes a few minutes: torch is large)" >&2
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
    echo "$stamp_now" > .venv/.stamp
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PATH="$PWD/.venv/bin:$PATH"
