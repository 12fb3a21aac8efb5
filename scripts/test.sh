#!/usr/bin/env bash
# Run the test suite (creates .venv first if needed).
#   scripts/test.sh            fast tests (default, a few minutes on 2 CPU cores)
#   scripts/test.sh --slow     only the slow tests (learning checks, crash/resume; tens of minutes)
#   scripts/test.sh --all      everything except GPU tests
# Other arguments go to pytest, e.g. scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
marker=()
case "${1:-}" in
    --slow) marker=(-m "slow and not gpu"); shift ;;
    --all) marker=(-m "not gpu"); shift ;;
esac
exec python -m pytest "${marker[@]}" "$@"
