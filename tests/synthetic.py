"""Small synthetic datasets made inside tests: moving squares whose motion an action can steer."""

from __future__ import annotations

import numpy as np


def moving_squares(
    episodes: int = 8, length: int = 24, size: int = 16, actions: bool = True, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Episodes of a bright square moving on a dark background, bouncing off the walls.

    With ``actions`` the action (T, 2) in [-1, 1] adds to the velocity, and the reward is the square's
    horizontal position in [0, 1]; without, the square moves at a constant random velocity.
    Each episode follows the store layout: image (T, H, W, 3) uint8, action (T, A) float32 (A = 0 without
    actions), reward (T,), is_first / is_last / is_terminal (T,) bool.
    """
    rng = np.random.default_rng(seed)
    side = max(2, size // 4)
    out = []
    for _ in range(episodes):
        pos = rng.uniform(0, size - side, 2)
        vel = rng.uniform(-1.5, 1.5, 2)
        color = rng.integers(128, 256, 3).astype(np.uint8)
        image = np.zeros((length, size, size, 3), np.uint8)
        action = np.zeros((length, 2 if actions else 0), np.float32)
        reward = np.zeros(length, np.float32)
        for t in range(length):
            if t > 0:
                if actions:
                    action[t] = rng.uniform(-1, 1, 2)
                    vel = np.clip(vel + action[t], -2, 2)
                pos = pos + vel
                for d in range(2):
                    if pos[d] < 0 or pos[d] > size - side:
                        vel[d] = -vel[d]
                        pos[d] = np.clip(pos[d], 0, size - side)
            y, x = np.round(pos).astype(int)
            image[t, y : y + side, x : x + side] = color
            reward[t] = x / (size - side) if t > 0 else 0.0
        flags = np.zeros(length, bool)
        is_first, is_last = flags.copy(), flags.copy()
        is_first[0], is_last[-1] = True, True
        out.append(
            dict(
                image=image,
                action=action,
                reward=reward,
                is_first=is_first,
                is_last=is_last,
                is_terminal=flags.copy(),
            )
        )
    return out
