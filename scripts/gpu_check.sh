#!/usr/bin/env bash
# The prepared GPU check (issue #15): on a machine with a CUDA GPU, in under 8 minutes, prints one JSON line
# per figure and a final summary line ({"what": "gpu_check_summary", ...}). CI (.ci/run) never runs it.
#
#   scripts/gpu_check.sh --prepare     here, with a package index: SheepRL's wheels into .whl (about 1.3 MB)
#   scripts/gpu_check.sh               on the GPU machine, from the repository root
#   scripts/gpu_check.sh --dry-run     on a CPU: the same sections at toy sizes, to check the script itself
#
# Sections, each under its own `timeout` (seconds), run in this order; a section that fails or runs out of
# time prints {"what": NAME, "ok": false, "rc", "timed_out", "error"} and the next one starts. A global
# deadline (GPU_CHECK_BUDGET_S, default 460) shortens or skips the last sections. GPU_CHECK_SECTIONS="cem dream"
# runs only those (setup always runs), e.g. to rerun one that failed.
#   setup            30   wheels from .whl (if carried) onto PYTHONPATH, then a "device" line
#   gpu_tests        120  python -m pytest -m gpu tests/test_gpu.py -> {"what": "gpu_tests", "passed", ...}
#   dreamer_update   100  benchmarks/dreamer_update.py: DreamerV3-S full and world-model update, fp32 + bf16 (both layouts)
#   sheeprl          110  benchmarks/sheeprl_side_by_side.py: the S full update next to SheepRL 0.8.4's
#                         (skipped with {"what": "sheeprl_side_by_side", "skipped": true, "reason"} when
#                         SheepRL cannot be imported: carry its wheels, see --prepare)
#   cem              40   benchmarks/planning_latency.py: one CEM plan (PlaNet setting) at batch 1 and 16
#   dream            50   benchmarks/dream_rollouts.py: one CMA-ES generation, 64 x 16 dreams, horizon 1000
#   sheeprl_bf16     110  the S full update next to SheepRL's, both bf16-mixed (issue #19 item 1)
#   bf16_numerics    90   benchmarks/bf16_numerics.py: 200 DreamerV3-S updates fp32 vs bf16 (both layouts)
#
# Setup on a bare GPU machine: nothing is downloaded there. Its image has torch, lightning, einops, pytest,
# numpy, ...; this check needs nothing else except for SheepRL (sheeprl, hydra-core, omegaconf, antlr4,
# python-dotenv, gymnasium, farama-notifications), which `--prepare` downloads here into .whl (git-ignored
# through .git/info/exclude). With the device tool: carry [".whl"], command `bash scripts/gpu_check.sh`.
# A .whl made by ../shared/tools/gpu-wheels.sh (gymnasium, dm_control, mujoco, box2d, cma, GL loaders) works
# too: its .deb files are unpacked as that script says. Results also go to $OUT (or .bench/gpu_check):
# gpu_check.log (everything) and figures.jsonl (the JSON lines).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SHEEPRL_KIT=(sheeprl==0.8.4 hydra-core==1.3.8 omegaconf==2.3.1 python-dotenv==1.2.4 gymnasium==1.4.0
    farama-notifications==0.0.6)

if [[ ${1:-} == --prepare ]]; then
    set -e
    [[ -x .venv/bin/python ]] && PY=.venv/bin/python
    ex="$(git rev-parse --git-dir)/info/exclude"
    grep -qxF "/$WHEELS/" "$ex" 2>/dev/null || echo "/$WHEELS/" >>"$ex"
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$WHEELS" \
        "${SHEEPRL_KIT[@]}"
    # antlr4-python3-runtime 4.9.3 (hydra-core's pin) is a source release only: build its pure-Python wheel
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3
    du -sh "$WHEELS"
    echo "on the GPU machine: carry [\"$WHEELS\"] and run: bash scripts/gpu_check.sh"
    exit 0
fi

DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
if ((DRY)); then
    [[ -x .venv/bin/python && -z ${PYTHON:-} ]] && PY=.venv/bin/python
    export OMP_NUM_THREADS=1 WORLDMODELS_GPU_TEST_DEVICE=cpu
fi
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl} SDL_VIDEODRIVER=${SDL_VIDEODRIVER:-dummy}
RESULTS=${OUT:-$ROOT/.bench/gpu_check}
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_check.log
FIGURES=$RESULTS/figures.jsonl
: >"$LOG"
: >"$FIGURES"
WORK=$(mktemp -d)
export PY WHEELS DRY WORK
START=$SECONDS
DEADLINE=${GPU_CHECK_BUDGET_S:-460}
declare -A STATUS=()
ORDER=()

# One JSON line from key=value pairs (a value that parses as JSON stays JSON, anything else is a string),
# to stdout and figures.jsonl.
emit() {
    "$PY" - "$@" <<'PY' | tee -a "$FIGURES" "$LOG"
import json, sys
out = {}
for pair in sys.argv[1:]:
    key, _, value = pair.partition("=")
    try:
        out[key] = json.loads(value)
    except ValueError:
        out[key] = value
print(json.dumps(out))
PY
}

# section NAME BUDGET_S COMMAND...: run under timeout (a shell function goes as `bash -c "$(declare -f f); f"`);
# the JSON lines of its stdout go through, everything goes to the log.
section() {
    local name=$1 budget=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    if [[ -n ${GPU_CHECK_SECTIONS:-} && " $GPU_CHECK_SECTIONS setup " != *" $name "* ]]; then
        return 0
    fi
    ORDER+=("$name")
    if ((left < 15)); then
        STATUS[$name]=skipped
        emit what="$name" ok=false skipped=true reason="global deadline of ${DEADLINE} s reached"
        return 1
    fi
    ((budget > left - 5)) && budget=$((left - 5))
    echo "[gpu_check] $name (timeout ${budget} s): $*" >>"$LOG"
    local t0=$SECONDS rc
    timeout -k 10 "$budget" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    rc=$?
    cat "$WORK/$name.out" "$WORK/$name.err" >>"$LOG"
    grep '^{' "$WORK/$name.out" | tee -a "$FIGURES"
    if ((rc == 0)); then
        STATUS[$name]=ok
    else
        STATUS[$name]=failed
        local tail
        tail=$(tail -n 6 "$WORK/$name.err" "$WORK/$name.out" 2>/dev/null | grep -v '^==>' | tr '\n' ' ' | cut -c1-600)
        emit what="$name" ok=false rc="$rc" timed_out="$([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)" \
            seconds="$((SECONDS - t0))" error="$tail"
    fi
    echo "[gpu_check] $name: rc $rc after $((SECONDS - t0)) s" >>"$LOG"
    return "$rc"
}

# --- setup: carried wheels, then what this machine is --------------------------------------------------------
# shellcheck disable=SC2329  # run by section through declare -f
setup() {
    if [[ -d $WHEELS ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
        if compgen -G "$WHEELS/*.deb" >/dev/null && ((!DRY)) && [[ $(id -u) == 0 ]]; then
            for f in "$WHEELS"/*.deb; do dpkg -x "$f" /; done # GL loaders of gpu-wheels.sh (rendering only)
            ldconfig
        fi
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
            "$WHEELS"/*.whl || return 1
        export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PY" - "$DRY" <<'PY'
import importlib, json, platform, sys
import torch
dry = sys.argv[1] == "1"
if not torch.cuda.is_available() and not dry:
    print(json.dumps({"what": "device", "ok": False, "error": "torch sees no CUDA device", "torch": torch.__version__}))
    sys.exit(3)
def version(name):
    try:
        return getattr(importlib.import_module(name), "__version__", "yes")
    except Exception as e:
        return f"missing ({type(e).__name__})"
mods = ["lightning", "einops", "pytest", "gymnasium", "dm_control", "mujoco", "cma", "Box2D", "hydra", "sheeprl"]
print(json.dumps({
    "what": "device",
    "ok": True,
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none (dry run on the CPU)",
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "python": platform.python_version(),
    "packages": {m: str(version(m)) for m in mods},
}))
PY
}
if ! section setup 30 bash -c "$(declare -f setup); setup"; then
    if grep -q 'sees no CUDA' "$WORK/setup.out" 2>/dev/null; then
        emit what=gpu_check_summary ok=false error="no CUDA device" elapsed_s="$((SECONDS - START))"
        exit 1
    fi
fi
[[ -d /tmp/gpu_check_site ]] && export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}

# --- the gpu-marked tests ------------------------------------------------------------------------------------
# shellcheck disable=SC2329  # run by section through declare -f
gpu_tests() {
    "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -o addopts="" --junitxml="$WORK/gpu.xml" \
        >"$WORK/pytest.txt" 2>&1
    local rc=$?
    cat "$WORK/pytest.txt" >&2
    "$PY" - "$WORK/gpu.xml" "$rc" <<'PY'
import json, sys, xml.etree.ElementTree as ET
counts = dict(passed=0, failed=0, errors=0, skipped=0, xfailed=0)
failures = []
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError) as e:
    print(json.dumps({"what": "gpu_tests", "ok": False, "error": f"no junit report: {e}", "rc": int(sys.argv[2])}))
    sys.exit(1)
for case in cases:
    name = case.get("name")
    kinds = {child.tag: child for child in case}
    if "failure" in kinds or "error" in kinds:
        key = "failed" if "failure" in kinds else "errors"
        counts[key] += 1
        failures.append({"test": name, "message": (kinds.get("failure") or kinds.get("error")).get("message", "")[:300]})
    elif "skipped" in kinds:
        counts["xfailed" if kinds["skipped"].get("type") == "pytest.xfail" else "skipped"] += 1
    else:
        counts["passed"] += 1
print(json.dumps({"what": "gpu_tests", "ok": counts["failed"] + counts["errors"] == 0, **counts, "failures": failures}))
PY
    return "$rc"
}
section gpu_tests 120 bash -c "$(declare -f gpu_tests); gpu_tests"

# --- benchmarks ----------------------------------------------------------------------------------------------
if ((DRY)); then
    DEV=cpu
    UPDATE=(--sizes XS --batch 2 --length 8 --warmup 1 --repeats 1 --threads 1)
    CEM=(--batches 1 --warmup 0 --repeats 1 --threads 1)
    DREAM=(--population 4 --rollouts 2 --horizon 5 --repeats 1 --threads 1)
else
    DEV=cuda
    UPDATE=(--sizes S --warmup 2 --repeats 5)
    CEM=(--batches 1 16 --warmup 3 --repeats 10)
    DREAM=(--horizon 1000 --repeats 3)
fi
section dreamer_update 100 "$PY" benchmarks/dreamer_update.py --device "$DEV" "${UPDATE[@]}" \
    --what full world_model --variants base bf16 bf16_step

if "$PY" -c "import sheeprl, hydra, omegaconf, gymnasium" 2>"$WORK/sheeprl_import.err"; then
    section sheeprl 110 "$PY" benchmarks/sheeprl_side_by_side.py --device "$DEV" "${UPDATE[@]}" --what full \
        --sheeprl-python "$PY"
    SHEEPRL_BF16=(--sheeprl-python "$PY")
    SHEEPRL_OK=1
elif ((DRY)) && [[ -x .bench/sheeprl-venv/bin/python ]]; then
    section sheeprl 110 "$PY" benchmarks/sheeprl_side_by_side.py --device "$DEV" "${UPDATE[@]}" --what full
    SHEEPRL_BF16=()
    SHEEPRL_OK=1
elif [[ -z ${GPU_CHECK_SECTIONS:-} || " $GPU_CHECK_SECTIONS " == *" sheeprl "* ]]; then
    ORDER+=(sheeprl)
    STATUS[sheeprl]=skipped
    emit what=sheeprl_side_by_side ok=true skipped=true \
        reason="SheepRL cannot be imported here ($(tail -n 1 "$WORK/sheeprl_import.err" | cut -c1-200)); run scripts/gpu_check.sh --prepare where pip reaches an index and carry $WHEELS"
fi

section cem 40 "$PY" benchmarks/planning_latency.py --device "$DEV" "${CEM[@]}"
section dream 50 "$PY" benchmarks/dream_rollouts.py --device "$DEV" "${DREAM[@]}"
# issue #19 item 1: bf16 against SheepRL's bf16 in the same run, and the 200-update loss comparison
if [[ ${SHEEPRL_OK:-0} == 1 ]]; then
    section sheeprl_bf16 110 "$PY" benchmarks/sheeprl_side_by_side.py --device "$DEV" "${UPDATE[@]}" --what full \
        --precision bf16-mixed "${SHEEPRL_BF16[@]}"
fi
if ((DRY)); then
    section bf16_numerics 90 "$PY" benchmarks/bf16_numerics.py --device "$DEV" --tiny --size 16 --updates 4 --last 2
else
    section bf16_numerics 90 "$PY" benchmarks/bf16_numerics.py --device "$DEV"
fi

# --- summary -------------------------------------------------------------------------------------------------
statuses="{"
for name in "${ORDER[@]}"; do statuses+="\"$name\": \"${STATUS[$name]}\", "; done
statuses="${statuses%, }}"
failed=0
for name in "${ORDER[@]}"; do [[ ${STATUS[$name]} == failed ]] && failed=1; done
emit what=gpu_check_summary ok="$([[ $failed == 0 ]] && echo true || echo false)" sections="$statuses" \
    elapsed_s="$((SECONDS - START))" dry_run="$([[ $DRY == 1 ]] && echo true || echo false)" results="$RESULTS"
rm -rf "$WORK"
exit "$failed"
