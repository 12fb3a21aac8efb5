import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

# One intra-op thread: tests are tiny, and two spinning threads on a busy 2-core machine slow them 10-50x.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Tests marked ``gpu`` skip where torch sees no CUDA device (``-m gpu`` on a CPU machine skips them;
    ``WORLDMODELS_GPU_TEST_DEVICE=cpu`` runs them CPU against CPU, see tests/test_gpu.py)."""
    if torch.cuda.is_available() or os.environ.get("WORLDMODELS_GPU_TEST_DEVICE") == "cpu":
        return
    import pytest

    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
