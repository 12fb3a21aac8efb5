"""The one model interface (worldmodels/interface.py), stated once for every world-model family.

Every head reaches a model through these calls only, so each family must pass the same tests: shapes and
dtypes, the reset at ``is_first``, continuing a state, one-step filtering (``observe_step``), determinism
under a seed, gradients through ``imagine`` (the Dreamer actor's dynamics backpropagation), a uniform
``loss``, reward/continuation from features, and the model's own optimizer and clipping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.synthetic import moving_squares
from worldmodels.interface import WorldModel, last_step, observe_step, open_loop
from worldmodels.mdnrnn import MDNRNN
from worldmodels.rssm import RSSM
from worldmodels.vae import VAE

SIZE, A, B, T = 16, 2, 3, 8


def make(family: str) -> WorldModel:
    torch.manual_seed(0)
    if family == "rssm-dreamerv3":  # categorical latents
        return RSSM("dreamerv3-XS", SIZE, A, deter=16, stoch=4, classes=4, hidden=16, cnn_depth=4)
    if family == "rssm-planet":  # Gaussian latents, no continue head
        return RSSM("planet", SIZE, A, deter=16, stoch=4, hidden=16, cnn_depth=4)
    return MDNRNN(vae=VAE(SIZE, z_dim=6, width=0.25), action_dim=A, hidden=16, mixtures=3)


FAMILIES = ["rssm-dreamerv3", "rssm-planet", "mdnrnn"]
# what each family's state holds, with its trailing shape (the interface never looks inside)
STATE_SHAPES = {
    "rssm-dreamerv3": {"deter": (16,), "stoch": (4, 4), "logits": (4, 4)},
    "rssm-planet": {"deter": (16,), "stoch": (4,), "mean": (4,), "std": (4,)},
    "mdnrnn": {"z": (6,), "h": (16,), "c": (16,)},
}


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    episodes = moving_squares(episodes=B, length=T, size=SIZE, seed=seed)
    return {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_family_answers_the_interface_with_the_documented_shapes(family: str):
    model = make(family)
    assert isinstance(model, WorldModel)
    assert (model.action_dim, model.discrete, model.image_size) == (A, False, SIZE)
    data = batch()
    post = model.observe(data["image"], data["action"], data["is_first"])
    assert {k: tuple(v.shape) for k, v in post.items()} == {
        k: (B, T, *s) for k, s in STATE_SHAPES[family].items()
    }
    assert set(model.initial(B)) == set(post)
    state = model.imagine(last_step(post), torch.zeros(B, A))
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: (B, *s) for k, s in STATE_SHAPES[family].items()
    }
    for s, lead in ((state, (B,)), (post, (B, T))):
        features = model.features(s)
        assert features.shape == (*lead, model.feature_dim) and features.dtype == torch.float32
        assert model.reward(s).shape == lead and model.cont(s).shape == lead
        assert ((model.cont(s) >= 0) & (model.cont(s) <= 1)).all()
        torch.testing.assert_close(model.reward_from_features(features), model.reward(s))
        torch.testing.assert_close(model.cont_from_features(features), model.cont(s))
        decoded = model.decode(s)
        assert decoded.shape == (*lead, SIZE, SIZE, 3) and decoded.dtype == torch.uint8
    dream = open_loop(model, state, torch.zeros(B, 4, A))
    assert model.features(dream).shape == (B, 4, model.feature_dim)


def test_is_first_resets_the_state_per_sample_and_a_state_continues(family: str):
    model = make(family).eval()
    data = batch()
    is_first = data["is_first"].clone()
    is_first[0, 5] = True  # sample 0 starts over at step 5, sample 1 and 2 do not
    with torch.no_grad():
        post = model.observe(data["image"], data["action"], is_first)
        fresh = model.observe(data["image"][:, 5:], data["action"][:, 5:], torch.ones(B, 3, dtype=torch.bool))
    deterministic = {"rssm-dreamerv3": "logits", "rssm-planet": "mean", "mdnrnn": "h"}[family]
    # at the reset step the recurrent state and the latent's statistics depend on the image alone
    torch.testing.assert_close(post[deterministic][0, 5], fresh[deterministic][0, 0])
    assert not torch.allclose(post[deterministic][1, 5], fresh[deterministic][1, 0])  # history kept
    # observing in two calls, the second continuing the first's last state, is observing in one
    torch.manual_seed(3)
    whole = model.observe(data["image"], data["action"], data["is_first"])
    torch.manual_seed(3)
    first = model.observe(data["image"][:, :4], data["action"][:, :4], data["is_first"][:, :4])
    rest = model.observe(
        data["image"][:, 4:], data["action"][:, 4:], data["is_first"][:, 4:], last_step(first)
    )
    if family == "mdnrnn":  # deterministic given the images: both halves line up exactly
        for key in whole:
            torch.testing.assert_close(whole[key], torch.cat([first[key], rest[key]], 1))
    else:  # the RSSM samples z on the way; its first half is drawn from the same seeded stream
        for key in whole:
            torch.testing.assert_close(whole[key][:, :4], first[key])
        assert rest["deter"].shape == (B, T - 4, 16)


def test_observe_step_filters_one_frame_as_observe_does_and_resets_at_is_first(family: str):
    model = make(family).eval()
    data = batch()
    is_first = torch.tensor([False, True, False])  # env 1 starts a new episode at this frame
    with torch.no_grad():
        previous = last_step(
            model.observe(data["image"][:, :2], data["action"][:, :2], data["is_first"][:, :2])
        )
        action = data["action"][:, 2]
        torch.manual_seed(0)
        state = observe_step(model, data["image"][:, 2], is_first, (previous, action))
        torch.manual_seed(0)
        zeroed = action * torch.tensor([1.0, 0.0, 1.0])[:, None]  # no action leads into a first frame
        expected = last_step(
            model.observe(data["image"][:, 2:3], zeroed[:, None], is_first[:, None], previous)
        )
        torch.manual_seed(0)
        fresh = observe_step(model, data["image"][:, 2], torch.ones(B, dtype=torch.bool), None)
    for key in state:
        torch.testing.assert_close(state[key], expected[key])
    key = {"rssm-dreamerv3": "logits", "rssm-planet": "mean", "mdnrnn": "h"}[family]
    torch.testing.assert_close(state[key][1], fresh[key][1])  # the reset env starts over
    assert not torch.allclose(state[key][0], fresh[key][0])  # the others keep their history


def test_the_same_seed_gives_the_same_dream(family: str):
    model = make(family).eval()
    data = batch()

    def dream(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            post = model.observe(data["image"], data["action"], data["is_first"])
            return model.features(open_loop(model, last_step(post), torch.rand(B, 5, A) * 2 - 1))

    torch.testing.assert_close(dream(7), dream(7))
    assert not torch.equal(dream(7), dream(8))


def test_gradients_flow_through_imagine_into_the_actions(family: str):
    model = make(family)
    action = torch.zeros(B, A, requires_grad=True)
    state = model.initial(B)
    for _ in range(3):
        state = model.imagine(state, action)
    features = model.features(state)
    (features.square().sum() + model.reward_from_features(features).sum()).backward()
    assert action.grad is not None and action.grad.abs().sum() > 0  # what a backprop actor relies on


def test_loss_is_uniform_and_one_step_of_the_models_own_optimizer_lowers_it(family: str):
    model = make(family)
    data = batch()
    total, metrics, states = model.loss(data)
    assert total.ndim == 0 and total.requires_grad
    assert "loss" in metrics and all(not v.requires_grad and v.ndim == 0 for v in metrics.values())
    assert set(states) == set(STATE_SHAPES[family]) and model.features(states).shape == (
        B,
        T,
        model.feature_dim,
    )
    assert model.grad_clip_algorithm in ("norm", "value") and (model.grad_clip or 0) >= 0
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)
    losses = []
    for _ in range(15):
        torch.manual_seed(0)
        total, _, _ = model.loss(data)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < losses[0]
