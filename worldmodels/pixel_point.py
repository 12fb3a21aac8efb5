"""A tiny pixel task for learning tests: steer a dot to the middle of a line, seen as a 16x16 image.

Registered on import as ``PixelPoint-v0``; use the env spec ``worldmodels.pixel_point:PixelPoint-v0``.
State x in [-1, 1] starts uniformly at random; action a in [-1, 1] moves it by 0.25 a; reward 1 - |x| per
step; 30 steps. A random policy scores about 14.5, steering to the middle and staying there about 29.5.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SIZE = 16


class PixelPoint(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array", length: int = 30) -> None:
        self.render_mode, self.length = render_mode, length
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self.render(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.25 * float(np.asarray(action).reshape(-1)[0]), -1, 1))
        self.t += 1
        return self.render(), 1.0 - abs(self.x), False, self.t >= self.length, {}

    def render(self) -> np.ndarray:
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        column = int(round((self.x + 1) / 2 * (SIZE - 2)))
        image[:, column : column + 2] = (255, 200, 50)
        image[SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1, 2] = 255  # the goal mark
        return image


if "PixelPoint-v0" not in gym.registry:
    gym.register("PixelPoint-v0", entry_point=PixelPoint)
