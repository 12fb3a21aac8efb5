#!/usr/bin/env bash
# World Models on CarRacing-v3, cut down to run on 2 CPU cores in about 75 minutes (docs/controller.md,
# "The short CPU recipe"): Brownian random rollouts -> V (VAE) -> M (MDN-RNN) -> C (linear, CMA-ES in the
# real environment) -> evaluation on full 1000-step episodes.
#   scripts/carracing_cpu.sh [OUT_DIR]     (default: runs/carracing_cpu)
# Re-running resumes: episodes already stored are kept, both fits and CMA-ES go on from their last.ckpt
# (--ckpt_path last). Environment overrides: GENERATIONS (default 40), EVAL_EPISODES (10).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
out="${1:-runs/carracing_cpu}"
generations="${GENERATIONS:-40}"
eval_episodes="${EVAL_EPISODES:-10}"

# Episodes, V and M of an earlier run saw whole frames and linearly rescaled brakes (worldmodels/envs.py)
if [ -f "$out/episodes/metadata.json" ] && ! grep -q '"crop_rows"' "$out/episodes/metadata.json"; then
    echo "$out/episodes: collected before the World Models frame crop and brake mapping; give a new OUT_DIR" >&2
    exit 2
fi
# 100 episodes of 500 steps with actions that wander (uniform ones leave the car on its start straight)
stored=$(find "$out/episodes" -name '*.npz' 2>/dev/null | wc -l)
if [ "$stored" -lt 100 ]; then
    worldmodels collect --env CarRacing-v3 --episodes $((100 - stored)) --rollout_steps 500 --policy brownian \
        --workers 2 --seed 0 --out "$out/episodes"
fi
# V: 2000 steps of 64 frames at lr 1e-3 (the paper: batch 100 at lr 1e-4 for ~1M frames x 10 epochs)
worldmodels fit -c configs/carracing_vae.yaml --data.path "$out/episodes" --trainer.default_root_dir "$out/vae" \
    --data.batch_size 64 --model.init_args.lr 1e-3 --trainer.max_steps 2000 --checkpoint_every 500 \
    --ckpt_path last
# M: 600 steps of 16 windows x 64 frames (the paper: 4000 steps of 100 x 1000 pre-encoded frames)
worldmodels fit -c configs/carracing_mdnrnn.yaml --model.init_args.vae_ckpt "$out/vae/checkpoints/last.ckpt" \
    --data.path "$out/episodes" --trainer.default_root_dir "$out/mdnrnn" --data.batch_size 16 \
    --data.length 64 --trainer.max_steps 600 --checkpoint_every 200 --dream_every 0 --ckpt_path last
# C: population 16 x 2 full episodes (the paper: 64 x 16); an episode ends after 50 steps without a new tile
worldmodels agent controller -c configs/controller_carracing.yaml --model "$out/mdnrnn/checkpoints/last.ckpt" \
    --out "$out/controller" --population 16 --rollouts 2 --patience 50 --generations "$generations" \
    --eval_every 5 --eval_rollouts 4 --workers 2 --ckpt_path last
# Evaluation on full episodes without patience, and a random policy on the same tracks for comparison
OMP_NUM_THREADS=1 worldmodels eval --ckpt "$out/controller/checkpoints/last.ckpt" --env CarRacing-v3 \
    --episodes "$eval_episodes" --video "$out/controller.mp4"
if [ ! -f "$out/random/metadata.json" ]; then  # the same tracks (seeds 0, 1, ...) with uniform random actions
    worldmodels collect --env CarRacing-v3 --episodes "$eval_episodes" --seed 0 --workers 2 --out "$out/random"
fi
worldmodels info "$out/random" | grep returns
