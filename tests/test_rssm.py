"""RSSM world model (worldmodels/rssm.py), its distributions and the conv encoder / decoder it uses."""

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from encoders.conv import STYLES, ConvDecoder, ConvEncoder
from tests.synthetic import moving_squares
from worldmodels.distributions import (
    TwoHotSymlog,
    gaussian,
    kl,
    kl_dyn_rep,
    sample_onehot,
    symexp,
    symlog,
    twohot,
    unimix,
)
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.interface import last_step, open_loop
from worldmodels.rssm import PRESETS, RSSM

TINY = dict(
    deter=32, stoch=4, hidden=32, mlp_layers=1, cnn_depth=4
)  # keeps each preset's latent kind and heads


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch_of(episodes: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Episodes of equal length -> a training batch (B, T, ...)."""
    return {k: torch.from_numpy(np.stack([e[k] for e in episodes])) for k in episodes[0]}


def tiny(preset: str = "dreamerv3-S", size: int = 16, action_dim: int = 2, **kwargs) -> RSSM:
    return RSSM(preset, image_size=size, action_dim=action_dim, **{**TINY, **kwargs})


# --- distributions ----------------------------------------------------------------------------------------


def test_symlog_round_trip():
    x = torch.tensor([-1e6, -300.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 1e6], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)
    assert symlog(torch.tensor(0.0)) == 0 and symlog(torch.tensor(1e6)) < 14


def test_twohot_log_prob_maximizer_has_the_target_as_mean():
    targets = torch.tensor([0.0, 0.37, -3.2, 250.0, -4000.0])
    exact = TwoHotSymlog(twohot(symlog(targets), TwoHotSymlog(torch.zeros(255)).bins).log())
    torch.testing.assert_close(exact.mean(), targets, rtol=1e-4, atol=1e-4)
    logits = torch.zeros(5, 255, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(300):
        loss = -TwoHotSymlog(logits).log_prob(targets).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dist = TwoHotSymlog(logits.detach())
    torch.testing.assert_close(dist.mean(), targets, rtol=2e-2, atol=2e-2)
    assert torch.all(dist.log_prob(targets) > dist.log_prob(targets + 1.0))


def test_twohot_reward_keeps_its_precision_under_bf16_autocast():
    torch.manual_seed(0)
    model = RSSM(preset="dreamerv3-S", image_size=16, action_dim=1, deter=8, stoch=4, classes=4, hidden=8,
                 mlp_layers=1, cnn_depth=4)  # fmt: skip
    bins, last = TwoHotSymlog(torch.zeros(255)).bins, model.reward_head[-1]
    features = torch.randn(1, model.feature_dim)
    for target in (17.3, -5.2, 0.37, 250.0):
        t = torch.tensor([target])
        with torch.no_grad():  # the head's output is the log of the two-hot encoding of the target
            last.weight.zero_()
            last.bias.copy_(twohot(symlog(t), bins)[0].clamp(min=1e-8).log())
        exact_loss = -TwoHotSymlog(model.reward_head(features)).log_prob(t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predicted = model.reward_from_features(features)
            loss = -TwoHotSymlog(model.reward_head(features)).log_prob(t)
        assert predicted.dtype == torch.float32
        assert predicted.item() == pytest.approx(target, rel=2e-3, abs=1e-3)
        assert loss.item() == pytest.approx(exact_loss.item(), rel=0.02, abs=0.01)


def test_unimix_floors_probabilities_and_samples_pass_gradients():
    logits = torch.tensor([[1e4, -1e4, 0.0, -50.0]])
    probs = unimix(logits, 0.01).exp()
    assert torch.all(probs >= 0.01 / 4 - 1e-7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))
    sample = sample_onehot(logits.expand(1000, 4))  # (1000, 4): 1000 categoricals of 4 classes
    assert torch.all(sample.detach().sum(-1) == 1) and set(sample.detach().unique().tolist()) == {0.0, 1.0}
    assert sample.detach()[:, 1:].sum() > 0  # the 1% uniform share lets improbable classes be drawn
    soft = torch.tensor([[2.0, 0.0, -1.0, 0.5]], requires_grad=True)  # (S=1, K=4)
    (sample_onehot(soft) * torch.arange(4.0)).sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0  # straight-through gradient


def test_kl_balancing_terms_split_the_gradient():
    post_mean = torch.zeros(3, 5, requires_grad=True)
    prior_mean = torch.ones(3, 5, requires_grad=True)
    post = {"mean": post_mean, "std": torch.full((3, 5), 0.5)}
    prior = {"mean": prior_mean, "std": torch.ones(3, 5)}
    dyn, rep = kl_dyn_rep(post, prior)
    closed = 5 * (np.log(1 / 0.5) + (0.25 + 1) / 2 - 0.5)  # KL[N(0, .5) || N(1, 1)] per dim, 5 dims
    for value in (dyn, rep, kl(post, prior)):
        torch.testing.assert_close(value, torch.full((3,), closed))
    dyn.sum().backward(retain_graph=True)
    assert post_mean.grad is None and prior_mean.grad.abs().sum() > 0  # dyn trains the prior only
    prior_mean.grad = None
    rep.sum().backward()
    assert prior_mean.grad is None and post_mean.grad.abs().sum() > 0  # rep trains the posterior only
    assert gaussian(torch.zeros(2, 3), torch.ones(2, 3)).event_shape == (3,)


# --- conv encoder / decoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [16, 32, 64, 96])
def test_conv_encoder_decoder_shapes(style, size):
    encoder, decoder = ConvEncoder(size, 4, style), ConvDecoder(10, size, 4, style)
    assert encoder(torch.zeros(2, 3, size, size)).shape == (2, encoder.out_dim)
    assert decoder(torch.zeros(2, 10)).shape == (2, 3, size, size)


def test_conv_paper_sizes_and_channels_last():
    assert ConvEncoder(64, 32, "dreamerv1").out_dim == 1024  # DreamerV1: 2x2x256 after four valid k4 convs
    assert ConvEncoder(64, 32, "dreamerv3").out_dim == 4096  # DreamerV3: 4x4x256
    for style in STYLES:
        encoder, decoder = ConvEncoder(32, 4, style), ConvDecoder(6, 32, 4, style)
        fast_encoder, fast_decoder = ConvEncoder(32, 4, style, True), ConvDecoder(6, 32, 4, style, True)
        fast_encoder.load_state_dict(encoder.state_dict())
        fast_decoder.load_state_dict(decoder.state_dict())
        x, z = torch.rand(3, 3, 32, 32) - 0.5, torch.randn(3, 6)
        torch.testing.assert_close(fast_encoder(x), encoder(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast_decoder(z), decoder(z), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="image_size=100"):
        ConvEncoder(100)


# --- the model ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_trains_one_step(preset):
    model = tiny(preset)
    batch = batch_of(moving_squares(episodes=2, length=6, size=16))
    opt = model.configure_optimizers()
    before = [p.detach().clone() for p in model.parameters()]
    loss, metrics, post = model.loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    assert sum(not torch.equal(a, b) for a, b in zip(before, model.parameters())) > len(before) // 2
    paper = PRESETS[preset]
    assert ("logits" in post) == (paper["classes"] > 0)  # latent kind kept: categorical or Gaussian
    assert model.reward_head[-1].out_features == (255 if paper["reward_head"] == "twohot" else 1)
    assert ("cont" in metrics) == paper["cont_head"] and ("dyn" in metrics) == paper["kl_balance"]
    if not paper["cont_head"]:
        assert torch.equal(model.cont(post), torch.ones(2, 6))


def test_presets_at_paper_sizes():
    sizes = {name: RSSM(name, image_size=64, action_dim=6) for name in PRESETS}
    assert sizes["planet"].feature_dim == 200 + 30 and sizes["dreamerv1"].feature_dim == 200 + 30
    assert [sizes[f"dreamerv3-{s}"].feature_dim for s in ("XS", "S", "M")] == [
        256 + 1024,
        512 + 1024,
        1024 + 1024,
    ]
    assert sizes["dreamerv1"].encoder.out_dim == 1024 and sizes["dreamerv3-M"].encoder.out_dim == 48 * 8 * 16
    assert (
        sizes["planet"].config["lr"],
        sizes["dreamerv1"].config["lr"],
        sizes["dreamerv3-S"].config["lr"],
    ) == (1e-3, 6e-4, 1e-4)
    model = sizes["dreamerv3-XS"]
    images = torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)
    post = model.observe(images, torch.zeros(1, 2, 6), torch.tensor([[True, False]]))
    assert post["stoch"].shape == (1, 2, 32, 32) and model.decode(post).shape == (1, 2, 64, 64, 3)


def test_bad_config_and_inputs_raise():
    with pytest.raises(ConfigError, match="dreamerv3-S"):
        RSSM("dreamerv4")
    with pytest.raises(ConfigError, match="image_size=100"):
        RSSM("planet", image_size=100)
    with pytest.raises(ConfigError, match="deter=0"):
        RSSM("planet", deter=0)
    model = tiny("dreamerv3-XS")
    batch = batch_of(moving_squares(episodes=1, length=3, size=32))
    with pytest.raises(CheckpointError, match="image_size=16"):
        model.observe(batch["image"], batch["action"], batch["is_first"])
    batch = batch_of(moving_squares(episodes=1, length=3, size=16, actions=False))
    with pytest.raises(CheckpointError, match="action_dim=2"):
        model.loss(batch)


# --- training ---------------------------------------------------------------------------------------------

CONTEXT, HORIZON = 6, 6


def _images_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) pairs -> mean squared error per dream step (T,), pixels in [0, 1]."""
    return ((a.float() - b.float()) / 255).square().mean((0, 2, 3, 4))


STEPS = 300  # about 10 s (DreamerV1) and 20 s (DreamerV3-XS) on 2 CPU cores


@pytest.fixture(scope="module", params=["dreamerv1", "dreamerv3-XS"])
def trained(request):
    """A tiny RSSM of each latent kind trained briefly on moving squares, with its losses on held-out episodes
    before and after training."""
    torch.manual_seed(0)
    train, test = batch_of(moving_squares(64, 24, 16, seed=0)), batch_of(moving_squares(32, 24, 16, seed=1))
    sizes = dict(deter=64, stoch=8, hidden=64, mlp_layers=1, cnn_depth=8)
    model = RSSM(request.param, image_size=16, action_dim=2, lr=1e-3, **sizes)
    opt = model.configure_optimizers()

    def held_out() -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        with torch.no_grad():
            return model.loss(test)[1]

    before = held_out()
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        index = torch.randint(0, 64, (16,), generator=generator)
        loss, _, _ = model.loss({k: v[index] for k, v in train.items()})
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), model.config["grad_clip"])
        opt.step()
    return model.eval(), test, before, held_out()


def test_training_lowers_the_losses(trained):
    _, _, before, after = trained
    assert after["loss"] < 0.3 * before["loss"] and after["image"] < 0.3 * before["image"]
    assert after["reward"] < 0.5 * before["reward"]


def test_open_loop_dream_beats_copying_the_last_frame(trained):
    model, test, _, _ = trained
    with torch.no_grad():
        post = model.observe(
            test["image"][:, :CONTEXT], test["action"][:, :CONTEXT], test["is_first"][:, :CONTEXT]
        )
        dream = model.decode(
            open_loop(model, last_step(post), test["action"][:, CONTEXT : CONTEXT + HORIZON])
        )
    truth = test["image"][:, CONTEXT : CONTEXT + HORIZON]
    model_mse = _images_mse(dream, truth)
    copy_mse = _images_mse(test["image"][:, CONTEXT - 1 : CONTEXT].expand_as(truth), truth)
    blank_mse = _images_mse(torch.zeros_like(truth), truth)
    assert model_mse.mean() < 0.8 * copy_mse.mean(), (model_mse, copy_mse)
    assert model_mse[0] < blank_mse[0], (
        model_mse,
        blank_mse,
    )  # the next frame places the square, not just blank


def test_checkpoint_reloads_to_identical_predictions(tmp_path):
    model = tiny("dreamerv3-XS")
    batch = batch_of(moving_squares(episodes=2, length=6, size=16))
    clipped = []
    original = model.clip_gradients
    model.clip_gradients = lambda opt, **kw: clipped.append(kw) or original(opt, **kw)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader([batch], batch_size=None))
    assert clipped[0] == {"gradient_clip_val": 1000.0, "gradient_clip_algorithm": "norm"}  # DreamerV3 clip
    trainer.save_checkpoint(tmp_path / "rssm.ckpt")
    assert torch.load(tmp_path / "rssm.ckpt", weights_only=False)["model_class"] == "worldmodels.rssm.RSSM"
    loaded = RSSM.load_from_checkpoint(tmp_path / "rssm.ckpt")

    def predict(m: RSSM) -> list[torch.Tensor]:
        torch.manual_seed(3)
        m.eval()
        with torch.no_grad():
            post = m.observe(batch["image"], batch["action"], batch["is_first"])
            return [post["logits"], m.decode(post), m.reward(post), m.cont(post)]

    assert loaded.hparams == model.hparams and loaded.feature_dim == model.feature_dim
    for a, b in zip(predict(model), predict(loaded)):
        assert torch.equal(a, b)


def test_action_free_training_on_video():
    episodes = moving_squares(episodes=4, length=10, size=16, actions=False)
    batch = batch_of(episodes)
    assert batch["action"].shape == (4, 10, 0)
    model = tiny("dreamerv3-XS", action_dim=0, channels_last=True)
    opt = model.configure_optimizers()
    losses = []
    for _ in range(5):
        loss, _, post = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    dream = open_loop(model, last_step(post), torch.zeros(4, 3, 0))
    assert model.decode(dream).shape == (4, 3, 16, 16, 3)


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """The compiled filter step draws the same latents as the eager one (SAME_DRAWS: Inductor's own random
    generator drew others, a 1.2% loss difference on Intel, 0.55% on AMD EPYC), so the losses differ only by
    the fused kernels' float rounding: the one-hot samples are equal and the loss agrees to 1e-4. The compiled
    imagination step likewise draws what the eager one draws, three steps from the last posterior."""
    eager = tiny("dreamerv3-XS")
    compiled = tiny("dreamerv3-XS", compile=True)
    compiled.load_state_dict(eager.state_dict())
    batch = batch_of(moving_squares(episodes=2, length=4, size=16))
    results = []
    for model in (eager, compiled):
        torch.manual_seed(0)
        total, _, post = model.loss(batch)
        state = {k: v[:, -1].detach() for k, v in post.items()}
        draws = []
        for _ in range(3):
            state = model.imagine(state, torch.full((2, model.action_dim), 0.5))
            draws.append(state["stoch"].argmax(-1))
        results.append(
            (total.detach(), post["stoch"].detach().argmax(-1), torch.stack(draws), state["deter"])
        )
    assert torch.equal(results[0][1], results[1][1])  # the same categorical draws at every step
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-3)
    assert torch.equal(results[0][2], results[1][2])  # imagined draws
    torch.testing.assert_close(results[0][3], results[1][3], rtol=1e-4, atol=1e-5)
