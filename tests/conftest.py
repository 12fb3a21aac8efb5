import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

# One intra-op thread: tests are tiny, and two spinning threads on a busy 2-core machine slow them 10-50x.
torch.set_num_threads(1)
