"""Paper fidelity (issue #15): the details of the official code that the models follow, each checked against a
hand computation. Without the detail each test fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.dreamer import DreamerAgent
from encoders.mlp import TRUNC_STD
from encoders.pixels import to_float
from tests.synthetic import moving_squares
from worldmodels.distributions import kl
from worldmodels.errors import ConfigError
from worldmodels.rssm import PRESETS, RSSM

SIZE = 16
SMALL = dict(deter=16, stoch=4, hidden=16, mlp_layers=1, cnn_depth=4)


def rssm(preset: str, **kwargs) -> RSSM:
    torch.manual_seed(0)
    sizes = {**SMALL, "classes": 4} if preset.startswith("dreamerv3") else SMALL
    return RSSM(preset, image_size=SIZE, action_dim=2, **{**sizes, **kwargs})


def squares(batch: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    episodes = moving_squares(episodes=batch, length=length, size=SIZE, seed=3)
    return {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}


# --- DreamerV3 ----------------------------------------------------------------------------------------------


def test_an_imagined_action_outside_the_bounds_acts_as_its_clipped_value_with_a_scaled_gradient():
    model = rssm("dreamerv3-XS")
    state = {k: v.detach() for k, v in model.initial(1).items()}
    inside = torch.tensor([[1.0, -0.5]], requires_grad=True)
    outside = torch.tensor([[3.0, -0.5]], requires_grad=True)  # the DreamerV3 actor's Normal can sample 3.0
    deter_in, deter_out = model._deter(state, inside), model._deter(state, outside)
    torch.testing.assert_close(deter_out, deter_in)
    deter_in.sum().backward()
    deter_out.sum().backward()
    # a * sg(1 / max(1, |a|)): the gradient keeps its direction and is divided by |a| = 3 in the clipped dim
    torch.testing.assert_close(outside.grad, inside.grad * torch.tensor([[1 / 3, 1.0]]))


def test_dreamerv3_layer_norms_use_epsilon_1e3_everywhere():
    agent = DreamerAgent(world_model=rssm("dreamerv3-XS"), hidden=16, actor_layers=1, critic_layers=1)
    norms = [m for m in agent.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) >= 8  # GRU, image encoder/decoder channels, dense layers, actor, critic
    assert {m.eps for m in norms} == {1e-3}


def test_dreamerv3_weights_start_truncated_normal_with_fan_average_variance():
    model = rssm("dreamerv3-XS", deter=64, hidden=96)
    linear = model.img_out[0].weight  # (96, 64): fan_in 64, fan_out 96
    std = math.sqrt(1 / ((64 + 96) / 2))
    assert abs(linear.std().item() / std - 1) < 0.05
    assert linear.abs().max() <= 2 * std / TRUNC_STD  # truncated at two of the unit normal's std
    conv = model.encoder.convs[0].weight  # (4, 3, 4, 4): fan_in 3 * 16, fan_out 4 * 16
    assert abs(conv.std().item() / math.sqrt(1 / 56) - 1) < 0.15


def test_planet_and_dreamerv1_weights_start_glorot_uniform_with_zero_biases():
    model = rssm("planet", deter=64, hidden=96)
    layer = model.img_out[0]
    limit = math.sqrt(6 / (64 + 96))  # TensorFlow's glorot_uniform
    assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.95 * limit
    assert abs(layer.weight.std().item() / (limit / math.sqrt(3)) - 1) < 0.05
    assert torch.all(layer.bias == 0)


def test_dreamerv3_initial_state_is_tanh_of_a_learned_vector_and_the_priors_mode_there():
    model = rssm("dreamerv3-XS")
    with torch.no_grad():
        model.initial_deter.copy_(torch.linspace(-2, 2, 16))
    state = model.initial(3)
    torch.testing.assert_close(state["deter"], torch.tanh(torch.linspace(-2, 2, 16)).expand(3, 16))
    logits = model._stats(model.img_stats(model.img_out(state["deter"][:1])))["logits"]  # (1, 4, 4)
    expected = nn.functional.one_hot(logits.argmax(-1), 4).float().expand(3, 4, 4)
    torch.testing.assert_close(state["stoch"], expected)
    total, _, _ = model.loss(squares())
    total.backward()
    assert model.initial_deter.grad is not None and model.initial_deter.grad.abs().sum() > 0


def test_planet_and_dreamerv1_start_from_a_zero_state():
    for preset in ("planet", "dreamerv1"):
        state = rssm(preset).initial(2)
        assert not hasattr(rssm(preset), "initial_deter")
        assert torch.all(state["deter"] == 0) and torch.all(state["stoch"] == 0)


def test_imagined_continuation_is_the_heads_mode_in_v3_and_its_probability_in_v1():
    weights = {}
    for version, preset in (("v3", "dreamerv3-XS"), ("v1", "dreamerv1")):
        agent = DreamerAgent(
            world_model=rssm(preset), version=version, horizon=3, hidden=16, actor_layers=1, critic_layers=1
        )
        agent.world_model.cont_from_features = lambda f: torch.full(f.shape[:-1], 0.7)
        start = agent.world_model.initial(2)
        _, trajectory, _ = agent.actor_loss(start, torch.ones(2))
        weights[version] = trajectory["weight"][0]
    g3, g1 = 1 - 1 / 333, 0.99  # the versions' discounts
    torch.testing.assert_close(weights["v3"], torch.tensor([1.0, g3, g3**2]))  # mode(Bernoulli(0.7)) = 1
    torch.testing.assert_close(weights["v1"], torch.tensor([1.0, g1 * 0.7, (g1 * 0.7) ** 2]))


def test_the_backprop_actor_maximizes_the_normalized_advantage_over_the_critics_baseline():
    agent = DreamerAgent(
        world_model=rssm("dreamerv3-XS"), horizon=3, hidden=16, actor_layers=1, critic_layers=1
    )
    agent.actor_entropy = 0.0
    for layer in (agent.world_model.reward_head[-1], agent.critic[-1]):  # zero-initialized: v = 0 otherwise
        nn.init.normal_(layer.weight, std=0.3)
    start = {k: v.detach() for k, v in agent.world_model.initial(4).items()}
    loss, trajectory, metrics = agent.actor_loss(start, torch.ones(4))
    baseline = agent.value(trajectory["features"])  # v(s_0..s_{H-1}) (N, H)
    advantage = (trajectory["returns"] - baseline) / metrics["return_scale"]
    torch.testing.assert_close(loss, -(trajectory["weight"] * advantage).mean())
    assert baseline.abs().mean() > 0.01


# --- PlaNet -------------------------------------------------------------------------------------------------


def test_five_bit_quantization_floors_to_32_levels_and_adds_noise_within_one_level():
    images = torch.tensor([0, 7, 8, 255], dtype=torch.uint8).reshape(1, 1, 4, 1).expand(1, 1, 4, 3)
    middle = to_float(images, bits=5)[0, 0, 0]  # (4,): floor(x / 8) = 0, 0, 1, 31
    torch.testing.assert_close(middle, (torch.tensor([0.0, 0.0, 1.0, 31.0]) + 0.5) / 32 - 0.5)
    torch.manual_seed(0)
    noisy = to_float(images, bits=5, noise=True)[0, 0, 0]
    low = torch.tensor([0.0, 0.0, 1.0, 31.0]) / 32 - 0.5
    assert torch.all(noisy >= low) and torch.all(noisy < low + 1 / 32)
    torch.testing.assert_close(to_float(images, bits=8)[0, 0, 0], torch.tensor([0, 7, 8, 255]) / 255 - 0.5)


def test_planet_sees_images_that_differ_below_its_5_bit_levels_as_the_same():
    model, batch = rssm("planet"), squares()
    brighter = batch["image"] | 7  # the same 5-bit levels
    torch.manual_seed(1)
    a = model.observe(batch["image"], batch["action"], batch["is_first"])
    torch.manual_seed(1)
    b = model.observe(brighter, batch["action"], batch["is_first"])
    torch.testing.assert_close(a["mean"], b["mean"])


def test_planet_loss_scales_the_reward_by_10_and_clips_each_steps_kl_at_the_free_nats():
    assert PRESETS["planet"]["free_nats"] == 3.0  # PlaNet's; an untrained model's KLs are far lower
    free = 0.07
    model, batch = rssm("planet", free_nats=free), squares()
    torch.manual_seed(2)
    total, metrics, _ = model.loss(batch)
    torch.manual_seed(2)  # the same noise and samples, drawn in the loss's order
    x = to_float(batch["image"], 5, noise=True)
    post, prior = model._filter(x, batch["action"], batch["is_first"])
    per_step = kl(post, prior)  # (B, T)
    expected = metrics["image"] + 10 * metrics["reward"] + (per_step - free).clamp(min=0).mean()
    torch.testing.assert_close(total, expected)
    assert per_step.min() < free < per_step.max()  # tells a clip of each step from a clip of the mean


def test_planet_layers_are_relu_with_a_reward_head_of_3_x_300():
    model = RSSM("planet", image_size=SIZE, action_dim=2)
    activations = {type(m) for m in model.modules() if isinstance(m, nn.ReLU | nn.ELU | nn.SiLU)}
    assert activations == {nn.ReLU}
    linears = [m for m in model.reward_head if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(230, 300), (300, 300), (300, 300), (300, 1)]


# --- DreamerV1 ----------------------------------------------------------------------------------------------


def linear_shapes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def test_dreamerv1_has_the_released_codes_units_and_adam_epsilon():
    """danijar/dreamer (TF2) dreamer.py: RSSM(30, 200, 200), reward 2 x 400, pcont 3 x 400, value 3 x 400,
    action 4 x 400; tools.py: tf.optimizers.Adam(lr), epsilon 1e-7."""
    model = RSSM("dreamerv1", image_size=SIZE, action_dim=2)
    assert linear_shapes(model.img_out) == [(200, 200)]
    assert linear_shapes(model.reward_head) == [(230, 400), (400, 400), (400, 1)]
    assert linear_shapes(model.cont_head) == [(230, 400), (400, 400), (400, 400), (400, 1)]
    assert model.configure_optimizers().defaults["eps"] == 1e-7
    agent = DreamerAgent(world_model=model, version="v1")
    assert linear_shapes(agent.critic) == [(230, 400), (400, 400), (400, 400), (400, 1)]
    assert linear_shapes(agent.actor) == [(230, 400)] + [(400, 400)] * 3 + [(400, 4)]


def test_each_paper_detail_is_a_switch_saved_with_the_value_in_force():
    model = rssm("dreamerv3-XS", initial="zeros", action_clip=0.0, image_bits=5, free_nats_per_step=False)
    assert not hasattr(model, "initial_deter")
    state = model.initial(1)
    assert not torch.equal(
        model._deter(state, torch.tensor([[3.0, 0.0]])), model._deter(state, torch.tensor([[1.0, 0.0]]))
    )
    saved = model.hparams
    assert (saved["initial"], saved["action_clip"], saved["image_bits"], saved["reward_scale"]) == (
        "zeros",
        0,
        5,
        1,
    )
    assert rssm("planet").hparams["reward_scale"] == 10.0  # the preset's value, not None
    agent = DreamerAgent(world_model=model, imagined_cont="mean", hidden=16, actor_layers=1, critic_layers=1)
    assert agent.hparams["imagined_cont"] == "mean"
    for bad in (dict(initial="random"), dict(image_bits=0), dict(action_clip=-1.0)):
        with pytest.raises(ConfigError, match="RSSM initial="):
            rssm("dreamerv3-XS", **bad)
