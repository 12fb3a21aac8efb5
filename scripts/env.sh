#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv from the pinned constraints, then put it on
# PATH. Used by scripts/demo.sh and scripts/test.sh; `source scripts/env.sh` does the same for your shell
# (it changes no shell options and does not cd). Re-running only reinstalls when the pins change.
_wm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(
    set -euo pipefail
    cd "$_wm_root"
    stamp_now="$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
    if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp_now" ]; then
        echo "[env] creating .venv (first run takes a few minutes: torch is large)" >&2
        [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
        echo "$stamp_now" > .venv/.stamp
    fi
) || { echo "[env] could not set up .venv" >&2; return 1 2>/dev/null || exit 1; }
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PATH="$_wm_root/.venv/bin:$PATH"
unset _wm_root
