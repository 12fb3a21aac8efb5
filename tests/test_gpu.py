"""CUDA checks (marker ``gpu``; deselected by default, skipped without a CUDA GPU; ``scripts/gpu_check.sh``).

    python -m pytest -m gpu tests/test_gpu.py

Every world model (the RSSM presets, the VAE + MDN-RNN pair) and every head (PlaNet, Dreamer, the controller)
runs on CUDA and gives what it gives on the CPU, with the same weights, the same batch and the same random
draws: ``same_noise`` makes every torch draw inside it come from one CPU generator and moves it to the device
asked for, so the two runs differ only by the arithmetic (TF32 off: ``exact_fp32``). Then a bf16-mixed DreamerV3
update against fp32, and the host syncs of a DreamerV3 update (``torch.cuda.set_sync_debug_mode("error")``).

Tiny dims: the whole file takes seconds on a GPU. ``WORLDMODELS_GPU_TEST_DEVICE=cpu`` runs the same comparisons
CPU against CPU (the sync tests skip), which checks the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributions.normal
import torch.distributions.utils
from torch import Tensor

from agents.controller import Controller, ControllerAgent, dream_returns
from agents.dreamer import DreamerAgent
from agents.planet import PlaNetAgent
from tests.synthetic import moving_squares
from worldmodels.interface import flatten_time, last_step, open_loop
from worldmodels.mdnrnn import MDNRNN
from worldmodels.rssm import PRESETS, RSSM
from worldmodels.vae import VAE

DEVICE = torch.device(os.environ.get("WORLDMODELS_GPU_TEST_DEVICE", "cuda"))
SIZE = 16
TINY_RSSM = dict(deter=32, stoch=4, hidden=32, mlp_layers=1, cnn_depth=4)  # keeps each preset's latent kind
TINY_V3 = dict(deter=16, stoch=4, classes=4, hidden=16, mlp_layers=1, cnn_depth=4)
TINY_V1 = dict(deter=16, stoch=4, hidden=16, mlp_layers=1, cnn_depth=4)
PLAN = dict(horizon=4, candidates=64, iterations=3, top_k=8)
LOSS = dict(rtol=1e-4, atol=1e-5)  # losses and states of one forward pass
GRAD = dict(rtol=1e-3, atol=1e-5)  # gradients: sums in another order
AFTER_STEP = dict(rtol=1e-3, atol=1e-4)  # after an Adam step, whose first step is lr * sign(gradient)

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore:You are trying to `self.log")]
needs_cuda = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA sync checks need a CUDA device")


# --- the same numbers on both devices -----------------------------------------------------------------------


@contextmanager
def same_noise(seed: int = 0) -> Iterator[None]:
    """Inside, every draw of ``torch.rand / randn / randint / rand_like / randn_like / normal / bernoulli /
    multinomial`` and of ``torch.distributions``' Normal samples comes from one CPU generator seeded ``seed`` and
    is moved to the device (and dtype) asked for: a CPU run and a CUDA run of the same code draw the same numbers
    in the same order. Generators passed by the caller are ignored."""
    g = torch.Generator().manual_seed(seed)
    names = ("rand", "randn", "randint", "rand_like", "randn_like", "normal", "bernoulli", "multinomial")
    orig = {name: getattr(torch, name) for name in names}
    std_normal = torch.distributions.utils._standard_normal

    def shape_of(size: tuple[Any, ...]) -> tuple[int, ...]:
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            return tuple(size[0])
        return tuple(size)

    def draw(kind: str, shape: tuple[int, ...], device: Any, dtype: torch.dtype | None) -> Tensor:
        out = orig[kind](shape, generator=g)  # float32 on the CPU
        return out.to(device=device, dtype=dtype or torch.get_default_dtype())

    def rand(*size: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any) -> Tensor:
        return draw("rand", shape_of(size), device, dtype)

    def randn(*size: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any) -> Tensor:
        return draw("randn", shape_of(size), device, dtype)

    def randint(*args: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any) -> Tensor:
        return orig["randint"](*args, generator=g).to(device=device, dtype=dtype or torch.int64)

    def rand_like(x: Tensor, dtype: Any = None, device: Any = None, **_: Any) -> Tensor:
        return draw("rand", tuple(x.shape), device or x.device, dtype or x.dtype)

    def randn_like(x: Tensor, dtype: Any = None, device: Any = None, **_: Any) -> Tensor:
        return draw("randn", tuple(x.shape), device or x.device, dtype or x.dtype)

    def normal(mean: Any, std: Any = 1.0, size: Any = None, *, generator: Any = None, **kw: Any) -> Tensor:
        if size is not None:  # normal(float, float, size)
            return mean + std * draw("randn", tuple(size), kw.get("device"), kw.get("dtype"))
        ref = mean if isinstance(mean, Tensor) else std
        shape = torch.broadcast_shapes(torch.as_tensor(mean).shape, torch.as_tensor(std).shape)
        return mean + std * draw("randn", tuple(shape), ref.device, ref.dtype)

    def bernoulli(p: Tensor, *args: Any, generator: Any = None, **_: Any) -> Tensor:
        return (draw("rand", tuple(p.shape), p.device, torch.float32) < p).to(p.dtype)

    def multinomial(probs: Tensor, num_samples: int, replacement: bool = False, **_: Any) -> Tensor:
        cpu = probs.detach().float().cpu()
        return orig["multinomial"](cpu, num_samples, replacement, generator=g).to(probs.device)

    def standard_normal(shape: Any, dtype: torch.dtype, device: Any) -> Tensor:
        return draw("randn", tuple(shape), device, dtype)

    fakes = dict(rand=rand, randn=randn, randint=randint, rand_like=rand_like, randn_like=randn_like)
    fakes.update(normal=normal, bernoulli=bernoulli, multinomial=multinomial)
    try:
        for name, fake in fakes.items():
            setattr(torch, name, fake)
        torch.distributions.utils._standard_normal = standard_normal
        torch.distributions.normal._standard_normal = standard_normal
        yield
    finally:
        for name, fn in orig.items():
            setattr(torch, name, fn)
        torch.distributions.utils._standard_normal = std_normal
        torch.distributions.normal._standard_normal = std_normal


@pytest.fixture(autouse=True)
def exact_fp32() -> Iterator[None]:
    """TF32 off (cuDNN convolutions use it by default on Ampere and later): fp32 on both devices."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    torch.set_float32_matmul_precision(precision)


def squares(batch: int = 2, length: int = 6) -> dict[str, Tensor]:
    """Moving squares (B, T, ...) at 16 px with 2-dim actions; the second sequence ends an episode midway."""
    episodes = moving_squares(episodes=batch, length=length, size=SIZE, seed=1)
    out = {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}
    if batch > 1:
        out["is_terminal"][1, length // 2 - 1] = True
        out["is_first"][1, length // 2] = True
    return out


def to(tree: Any, device: torch.device | str) -> Any:
    """Tensors of a nested dict / list / tuple moved to ``device``."""
    if isinstance(tree, Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to(v, device) for v in tree)
    return tree


def assert_same(got: Any, expected: Any, what: str, rtol: float, atol: float) -> None:
    """``got`` (the device's results) close to ``expected`` (the CPU's), tensor by tensor, as float."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), what
        for k in expected:
            assert_same(got[k], expected[k], f"{what}.{k}", rtol, atol)
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), what
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{what}[{i}]", rtol, atol)
    elif isinstance(expected, Tensor):
        assert got.device.type == DEVICE.type, f"{what} is on {got.device}, not {DEVICE}"
        a, b = got.detach().cpu().float(), expected.detach().cpu().float()
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
    else:
        assert got == pytest.approx(expected, rel=rtol, abs=atol), what


def on_both(
    build: Callable[[], Any], run: Callable[[Any, torch.device], dict[str, Any]]
) -> tuple[dict, dict]:
    """``run(copy of build(), device)`` on the CPU, then on ``DEVICE`` (same weights, same draws) -> both."""
    torch.manual_seed(0)
    module = build()
    results = []
    for device in (torch.device("cpu"), DEVICE):
        with same_noise(0):
            results.append(run(copy.deepcopy(module).to(device), device))
    return results[1], results[0]


def grads(module: torch.nn.Module) -> dict[str, Tensor]:
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


# --- world models -------------------------------------------------------------------------------------------


def world_model_run(model: Any, device: torch.device) -> dict[str, Any]:
    """loss + gradients, a continued observe, an open-loop dream with its rewards / continues, a decode."""
    batch = to(squares(), device)
    loss, metrics, post = model.loss(batch)
    loss.backward()
    last = last_step(post)
    dream = open_loop(model, last, batch["action"])  # (B, T, ...)
    with torch.no_grad():
        again = model.observe(batch["image"], batch["action"], batch["is_first"], last)
        decoded = model.decode(last).float()  # uint8 (B, H, W, 3): compared with atol 1 below
    return {
        "loss": loss,
        "metrics": metrics,
        "post": post,
        "grads": grads(model),
        "observe": again,
        "dream": dream,
        "reward": model.reward(dream),
        "cont": model.cont(dream),
        "features": model.features(dream),
        "decoded": decoded,
    }


def check_world_model(got: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in ("loss", "metrics", "post", "observe"):
        assert_same(got[key], expected[key], key, **LOSS)
    assert_same(got["grads"], expected["grads"], "grads", **GRAD)
    for key in ("dream", "reward", "cont", "features"):  # six steps of sampling: errors grow a little
        assert_same(got[key], expected[key], key, **AFTER_STEP)
    assert_same(got["decoded"], expected["decoded"], "decoded", rtol=0, atol=1.0)  # rounding to uint8


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_rssm_preset_gives_the_same_loss_gradients_states_and_dreams_on_cuda_as_on_cpu(preset: str):
    got, expected = on_both(lambda: RSSM(preset, image_size=SIZE, action_dim=2, **TINY_RSSM), world_model_run)
    check_world_model(got, expected)


def test_the_vae_and_mdnrnn_give_the_same_losses_gradients_states_and_dreams_on_cuda_as_on_cpu():
    def vae_run(vae: VAE, device: torch.device) -> dict[str, Any]:
        terms = vae.losses(to(squares()["image"], device))
        terms["loss"].backward()
        return {"terms": terms, "grads": grads(vae)}

    got, expected = on_both(lambda: VAE(SIZE, 4, 0.25), vae_run)
    assert_same(got["terms"], expected["terms"], "vae", **LOSS)
    assert_same(got["grads"], expected["grads"], "vae grads", **GRAD)
    got, expected = on_both(
        lambda: MDNRNN(vae=VAE(SIZE, 4, 0.25), action_dim=2, hidden=16, mixtures=3), world_model_run
    )
    check_world_model(got, expected)


# --- heads --------------------------------------------------------------------------------------------------


def obs_and_firsts(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Three envs' frames (3, H, W, 3) uint8 at two steps, and is_first for the second (env 1 restarts)."""
    images = squares(batch=3, length=3)["image"].to(device)
    return images[:, 0], images[:, 1], torch.tensor([False, True, False], device=device)


@pytest.mark.parametrize("world_model", ["rssm", "mdnrnn"])
def test_planet_trains_and_plans_the_same_on_cuda_as_on_cpu(world_model: str):
    def build() -> PlaNetAgent:
        model = (
            {"class_path": "worldmodels.rssm.RSSM", "init_args": dict(preset="planet", **TINY_V1)}
            if world_model == "rssm"
            else MDNRNN(vae=VAE(SIZE, 4, 0.25), action_dim=2, hidden=16, mixtures=3)
        )
        return PlaNetAgent(
            model, image_size=SIZE, action_dim=2, planner_options=PLAN, ensemble_heads=2, value_critic=True
        )

    def run(agent: PlaNetAgent, device: torch.device) -> dict[str, Any]:
        loss = agent.training_step(to(squares(), device))
        loss.backward()
        first, second, is_first = obs_and_firsts(device)
        action, state = agent.act(first, torch.ones(3, dtype=torch.bool, device=device), None, explore=False)
        action2, state2 = agent.act(second, is_first, state, explore=True)
        return {"loss": loss, "grads": grads(agent), "actions": [action, action2], "plan": state2["plan"]}

    got, expected = on_both(build, run)
    assert_same(got["loss"], expected["loss"], "loss", **LOSS)
    assert_same(got["grads"], expected["grads"], "grads", **GRAD)
    assert_same(got["actions"], expected["actions"], "actions", **AFTER_STEP)
    assert_same(got["plan"], expected["plan"], "plan", **AFTER_STEP)


def dreamer_batch(agent: DreamerAgent, device: torch.device) -> dict[str, Tensor]:
    """``squares()`` on ``device``; for a discrete agent the actions become one-hot of size 3."""
    batch = to(squares(), device)
    if agent.discrete:
        index = (batch["action"][..., 0] > 0).long() + (batch["action"][..., 1] > 0).long()
        batch["action"] = torch.nn.functional.one_hot(index, 3).float()
    return batch


def fabric_step(agent: DreamerAgent, device: torch.device, precision: str = "32-true") -> dict[str, Tensor]:
    """One ``DreamerAgent.training_step`` on a Fabric of ``device`` -> the metrics it logs."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=device.type, devices=1, precision=precision)
    optimizers = agent.configure_optimizers()
    module, *_ = fabric.setup(agent, *optimizers)
    logged: dict[str, Tensor] = {}
    fabric.log_dict = lambda metrics, step=None: logged.update(metrics)  # the tensors, not .item()
    with fabric.autocast():
        module.module.training_step(dreamer_batch(agent, device), 0)
    return {k: v.detach().float() for k, v in logged.items()}


def tiny_dreamer(version: str = "v3", discrete: bool = False, **kwargs: Any) -> DreamerAgent:
    sizes = TINY_V3 if version == "v3" else TINY_V1
    preset = "dreamerv3-XS" if version == "v3" else "dreamerv1"
    agent = DreamerAgent(
        {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": preset, **sizes}},
        version=version,
        image_size=SIZE,
        action_dim=3 if discrete else 2,
        discrete=discrete,
        horizon=4,
        hidden=16,
        actor_layers=1,
        critic_layers=1,
        **kwargs,
    )
    for layer in (agent.world_model.reward_head[-1], agent.critic[-1]):  # zero-initialized in DreamerV3
        torch.nn.init.normal_(layer.weight, std=0.3)
    return agent


@pytest.mark.parametrize(
    "version, discrete", [("v3", False), ("v3", True), ("v1", False)], ids=["v3", "v3-discrete", "v1"]
)
def test_dreamer_acts_and_updates_the_same_on_cuda_as_on_cpu(version: str, discrete: bool):
    def run(agent: DreamerAgent, device: torch.device) -> dict[str, Any]:
        first, second, is_first = obs_and_firsts(device)
        batch = dreamer_batch(agent, device)
        with torch.no_grad():
            _, _, post = agent.world_model.loss(batch)
            actor_loss, _, actor_metrics = agent.actor_loss(flatten_time(post), torch.ones(12, device=device))
        actions = []
        for explore in (False, True):
            action, state = agent.act(first, torch.ones(3, dtype=torch.bool, device=device), None, explore)
            actions += [action, agent.act(second, is_first, state, explore)[0]]
        return {"actor": actor_metrics, "actions": actions, "step": fabric_step(agent, device)}

    got, expected = on_both(lambda: tiny_dreamer(version, discrete), run)
    assert_same(got["actor"], expected["actor"], "actor_loss", **AFTER_STEP)  # 4 imagined steps
    assert_same(got["actions"], expected["actions"], "actions", **AFTER_STEP)
    assert_same(got["step"], expected["step"], "training_step metrics", **AFTER_STEP)


def test_the_controller_dreams_and_acts_the_same_on_cuda_as_on_cpu():
    def run(model: Any, device: torch.device) -> dict[str, Any]:
        controller = Controller(model.feature_dim, model.action_dim, model.discrete)
        params = 0.5 * torch.randn(4, controller.num_params, device=device)
        batch = to(squares(batch=3), device)
        with torch.no_grad():
            starts = last_step(model.observe(batch["image"], batch["action"], batch["is_first"]))
        returns = dream_returns(model, controller, params, starts, horizon=8)
        agent = ControllerAgent(model, controller, params[0])
        first, second, is_first = obs_and_firsts(device)
        action, state = agent.act(first, torch.ones(3, dtype=torch.bool, device=device), None)
        return {"returns": returns, "actions": [action, agent.act(second, is_first, state, explore=True)[0]]}

    for build in (
        lambda: MDNRNN(vae=VAE(SIZE, 4, 0.25), action_dim=2, hidden=16, mixtures=3),
        lambda: RSSM("dreamerv3-S", image_size=SIZE, action_dim=2, **TINY_V3),
    ):
        got, expected = on_both(build, lambda m, d: run(m.eval(), d))
        assert_same(got, expected, "controller", **AFTER_STEP)


# --- bf16 ---------------------------------------------------------------------------------------------------


def test_a_bf16_mixed_dreamerv3_update_runs_and_its_world_model_loss_stays_close_to_fp32():
    torch.manual_seed(0)
    agent = tiny_dreamer("v3")
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        with same_noise(0):
            results[precision] = fabric_step(copy.deepcopy(agent).to(DEVICE), DEVICE, precision)
    fp32, bf16 = results["32-true"], results["bf16-mixed"]
    assert set(bf16) == set(fp32) and all(torch.isfinite(v).all() for v in bf16.values()), bf16
    for term in ("loss", "image"):  # the world model's loss; bf16 keeps about 3 significant digits
        a, b = bf16[f"train/{term}"].item(), fp32[f"train/{term}"].item()
        assert abs(a - b) <= 0.02 * abs(b), (term, a, b)


# --- host syncs ---------------------------------------------------------------------------------------------


def synced_update(on_nonfinite: str, fabric_harness: bool) -> None:
    """A warmed-up DreamerV3 update on CUDA (Fabric) run under ``set_sync_debug_mode("error")``: raises at the
    first host-device sync. ``fabric_harness=False`` replaces what only the Fabric harness adds (its
    ``log_dict`` converts every metric with ``.item()``; its ``clip_gradients`` checks ``error_if_nonfinite``)
    by what a Trainer run does per step: keep the metric tensors, clip without the check."""
    from lightning.fabric import Fabric

    torch.manual_seed(0)
    agent = tiny_dreamer("v3", on_nonfinite=on_nonfinite).to(DEVICE)  # on the GPU first: fused Adam, as a run
    fabric = Fabric(accelerator="cuda", devices=1)
    module, *_ = fabric.setup(agent, *agent.configure_optimizers())
    agent = module.module
    if not fabric_harness:
        clip = fabric.clip_gradients
        fabric.log_dict = lambda metrics, step=None: None
        fabric.clip_gradients = lambda *a, **k: clip(*a, **{**k, "error_if_nonfinite": False})
    batch = to(squares(), DEVICE)
    agent.training_step(batch, 0)  # warm-up: lazy CUDA init, cuBLAS handles, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        agent.training_step(batch, 0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@needs_cuda
def test_a_dreamerv3_update_makes_no_host_syncs_with_the_nonfinite_check_off():
    synced_update(on_nonfinite="off", fabric_harness=False)


@needs_cuda
@pytest.mark.xfail(
    raises=RuntimeError,
    strict=True,
    reason="by design: on_nonfinite='stop' (the default) reads each loss term's finiteness on the host once "
    "per update, the price of stopping at the step a NaN appears (worldmodels/guards.py check_finite)",
)
def test_the_default_nonfinite_check_syncs_the_host_once_per_update():
    synced_update(on_nonfinite="stop", fabric_harness=False)


@needs_cuda
@pytest.mark.xfail(
    raises=RuntimeError,
    strict=True,
    reason="Fabric harness (benchmarks/dreamer_update.py), not the model: Fabric.log_dict calls .item() on "
    "every metric and Fabric.clip_gradients defaults to error_if_nonfinite=True (docs/benchmarks.md, host syncs)",
)
def test_the_fabric_benchmark_harness_syncs_the_host_in_log_dict_and_clipping():
    synced_update(on_nonfinite="off", fabric_harness=True)
