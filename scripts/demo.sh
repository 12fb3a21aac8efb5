#!/usr/bin/env bash
# The end-to-end demo on a built-in default (creates .venv first if needed):
# collect random episodes of dm_control cartpole-swingup (32x32 pixels), train a small RSSM on CPU for a few
# minutes, then write an open-loop dream video with per-step metrics.
#   scripts/demo.sh [OUT_DIR]        (default: demo_out)
# Environment overrides: DEMO_ENV (default dmc:cartpole-swingup), DEMO_EPISODES (12), DEMO_STEPS (1000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
out="${1:-demo_out}"
env_spec="${DEMO_ENV:-dmc:cartpole-swingup}"
episodes="${DEMO_EPISODES:-12}"
steps="${DEMO_STEPS:-1000}"

if [ ! -f "$out/episodes/metadata.json" ]; then
    worldmodels collect --env "$env_spec" --episodes "$episodes" --out "$out/episodes" --workers 2 --size 32
fi
worldmodels info "$out/episodes"
worldmodels fit -c configs/demo_rssm.yaml --data.path "$out/episodes" \
    --trainer.default_root_dir "$out/run" --trainer.max_steps "$steps"
worldmodels dream --ckpt "$out/run/checkpoints/last.ckpt" --data "$out/episodes" --out "$out/dream.mp4" \
    --context 5 --horizon 30

cat <<EOM

Demo done. Look at:
  $out/dream.mp4           truth | dream | error for 4 sequences (5 context frames, then 30 dreamed)
  $out/dream_metrics.png   per-step MSE / PSNR / SSIM of the dream against copying the last frame
  $out/dream_metrics.csv   the same numbers (and dream_metrics.json)
  $out/run/                checkpoints/last.ckpt, csv/version_0/metrics.csv; TensorBoard: tensorboard --logdir $out/run
EOM
