"""Mixed precision by network (encoders/precision.py): under a bf16 autocast a training step's networks compute
in bf16 and hand float32 back, and the code between them (latent statistics, distributions, losses) is float32."""

from __future__ import annotations

import copy

import numpy as np
import torch
from lightning.fabric import Fabric
from torch import nn

from agents.dreamer import DreamerAgent
from encoders.mlp import mlp
from encoders.precision import float32_between_networks, low_precision
from tests.synthetic import moving_squares
from worldmodels.rssm import RSSM

TINY = dict(deter=32, stoch=4, classes=4, hidden=32, mlp_layers=1, cnn_depth=4)


def batch(episodes: int = 4, length: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    data = moving_squares(episodes=episodes, length=length, size=16, seed=seed)
    return {k: torch.from_numpy(np.stack([e[k] for e in data])) for k in data[0]}


def output_dtypes(model: nn.Module, kinds: tuple[type, ...]) -> dict[str, set[torch.dtype]]:
    """Forward hooks on every module of ``kinds``: name -> the dtypes its outputs had."""
    seen: dict[str, set[torch.dtype]] = {}
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            hook = lambda m, i, out, name=name: seen.setdefault(name, set()).add(out.dtype)  # noqa: E731
            module.register_forward_hook(hook)
    return seen


def test_low_precision_runs_in_the_enclosing_autocast_and_returns_float32_only_between_networks():
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert low_precision(torch.matmul, x, w.T).dtype == torch.bfloat16  # no step: autocast as it is
        with float32_between_networks():
            assert (x @ w.T).dtype == torch.float32  # between the networks: float32
            inside = []
            out = low_precision(lambda a: inside.append((a @ w.T).dtype) or a @ w.T, x)
            assert inside == [torch.bfloat16] and out.dtype == torch.float32
    with float32_between_networks():  # no enclosing autocast: nothing changes
        assert low_precision(torch.matmul, x, w.T).dtype == torch.float32


def test_an_mlp_keeps_its_state_dict_keys_and_computes_in_bf16_inside_a_training_step():
    net = mlp("dreamerv3", 4, 8, 1, 2)
    assert list(net.state_dict()) == ["0.weight", "1.weight", "1.bias", "3.weight", "3.bias"]
    seen = output_dtypes(net, (nn.Linear,))
    with torch.autocast("cpu", dtype=torch.bfloat16), float32_between_networks():
        out = net(torch.randn(3, 4))
    assert out.dtype == torch.float32 and seen == {"0": {torch.bfloat16}, "3": {torch.bfloat16}}


def test_the_rssm_loss_under_bf16_autocast_runs_its_networks_in_bf16_and_its_latents_and_loss_in_float32():
    torch.manual_seed(0)
    model = RSSM("dreamerv3-XS", image_size=16, action_dim=2, **TINY)
    seen = output_dtypes(model, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, metrics, post = model.loss(batch())
    assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen.values()), seen
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in metrics.values())
    assert post["logits"].dtype == torch.float32 and post["deter"].dtype == torch.float32


def test_a_bf16_mixed_dreamer_run_keeps_its_world_model_losses_within_2_percent_of_float32():
    """30 updates of a tiny DreamerV3 on the same fixed batches and draws, in fp32 and in bf16-mixed (Fabric):
    both learn, and the world model's loss averaged over the last 10 updates agrees to 2%
    (benchmarks/bf16_numerics.py runs 200 updates at larger sizes)."""
    torch.manual_seed(0)
    spec = {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": "dreamerv3-XS", **TINY}}
    agent = DreamerAgent(spec, version="v3", image_size=16, action_dim=2, hidden=16, actor_layers=1,
                         critic_layers=1, horizon=4)  # fmt: skip
    batches = [batch(seed=i) for i in range(5)]
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
        fresh = copy.deepcopy(agent)  # the same initial weights for every run; its own optimizers
        module, *_ = fabric.setup(fresh, *fresh.configure_optimizers())
        logged: list[float] = []
        fabric.log_dict = lambda metrics, step=None, logged=logged: logged.append(
            float(metrics["train/loss"])
        )
        torch.manual_seed(1)
        for i in range(30):
            with fabric.autocast():
                module.module.training_step(batches[i % len(batches)], i)
        losses[precision] = sum(logged[-10:]) / 10
        assert losses[precision] < 0.97 * sum(logged[:5]) / 5  # both runs learn (fp32: 261 -> 245)
    fp32, bf16 = losses["32-true"], losses["bf16-mixed"]
    assert abs(bf16 - fp32) <= 0.02 * abs(fp32), (bf16, fp32)
