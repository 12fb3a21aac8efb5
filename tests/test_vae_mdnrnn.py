"""World Models V (worldmodels/vae.py) and M (worldmodels/mdnrnn.py) on tiny moving-squares data."""

from __future__ import annotations

import math
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.utils.data import DataLoader, default_collate

from encoders.vae import VAEDecoder, VAEEncoder
from tests.synthetic import moving_squares
from worldmodels.checkpoints import load_model
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.interface import last_step, open_loop
from worldmodels.mdnrnn import MDNRNN
from worldmodels.vae import VAE

SIZE, Z = 16, 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they spin (50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader(actions: bool = True, seed: int = 0) -> DataLoader:
    episodes = moving_squares(episodes=8, length=12, size=SIZE, actions=actions, seed=seed)
    return DataLoader(episodes, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _batch(actions: bool = True, seed: int = 1) -> dict[str, torch.Tensor]:
    return default_collate(moving_squares(episodes=4, length=12, size=SIZE, actions=actions, seed=seed))


def _seeded_loss(model: VAE | MDNRNN, batch: dict[str, torch.Tensor]) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        terms = model.losses(batch["image"]) if isinstance(model, VAE) else model.loss(batch)[1]
    return terms["loss"].item()


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float, float]:
    """A briefly trained VAE: (checkpoint path, loss before, loss after)."""
    L.seed_everything(0)
    vae = VAE(image_size=SIZE, z_dim=Z, width=0.25, lr=2e-3)
    batch = _batch()
    before = _seeded_loss(vae, batch)
    trainer = _trainer(60)
    trainer.fit(vae, _loader())
    path = str(tmp_path_factory.mktemp("vae") / "vae.ckpt")
    trainer.save_checkpoint(path)
    return path, before, _seeded_loss(vae, batch)


def _mdnrnn(vae: VAE | None = None, **kwargs) -> MDNRNN:
    torch.manual_seed(0)
    vae = vae or VAE(image_size=SIZE, z_dim=Z, width=0.25)
    return MDNRNN(vae=vae, **{"action_dim": 2, "hidden": 32, "mixtures": 3, **kwargs})


def test_encoder_decoder_shapes_paper_and_small_sizes() -> None:
    torch.manual_seed(0)
    paper = VAEEncoder(64, 32)
    assert paper.mu.in_features == 2 * 2 * 256  # World Models: 64 -> 31 -> 14 -> 6 -> 2, 256 channels
    for size in (64, 32, 16):
        mu, logvar = VAEEncoder(size, Z, 0.25)(torch.rand(2, 3, size, size) - 0.5)
        assert mu.shape == logvar.shape == (2, Z)
        out = VAEDecoder(size, Z, 0.25)(torch.randn(2, Z))
        assert out.shape == (2, 3, size, size) and out.min() > -0.5 and out.max() < 0.5
    with pytest.raises(ValueError, match="image_size=20"):
        VAEEncoder(20)
    with pytest.raises(ConfigError, match="image_size=20"):
        VAE(image_size=20)


def test_vae_loss_goes_down(vae_run: tuple[str, float, float]) -> None:
    _, before, after = vae_run
    assert after < 0.6 * before, (before, after)


def test_vae_checkpoint_round_trip(vae_run: tuple[str, float, float]) -> None:
    path = vae_run[0]
    assert torch.load(path, weights_only=True)["model_class"] == "worldmodels.vae.VAE"
    a, b = VAE.load_from_checkpoint(path).eval(), load_model(path)
    images = _batch()["image"]  # (B, T, H, W, 3)
    mu_a, logvar_a = a.encode(images)
    mu_b, logvar_b = b.encode(images)
    assert mu_a.shape == (4, 12, Z)
    assert torch.equal(mu_a, mu_b) and torch.equal(logvar_a, logvar_b)
    decoded = a.decode(mu_a)
    assert decoded.dtype == torch.uint8 and decoded.shape == images.shape
    assert torch.equal(decoded, b.decode(mu_b))
    with pytest.raises(CheckpointError, match="16, 16, 3"):
        a.encode(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


def test_mdnrnn_loss_goes_down(vae_run: tuple[str, float, float]) -> None:
    L.seed_everything(0)
    model = MDNRNN(vae_ckpt=vae_run[0], action_dim=2, hidden=32, mixtures=3, lr=3e-3)
    assert model.image_size == SIZE and model.z_dim == Z  # taken from the VAE, not the defaults
    vae_before = [p.clone() for p in model.vae.parameters()]
    batch = _batch()
    before = _seeded_loss(model, batch)
    _trainer(40).fit(model, _loader())
    after = _seeded_loss(model, batch)
    assert after < before - 0.5, (before, after)
    assert all(torch.equal(p, q) for p, q in zip(vae_before, model.vae.parameters()))  # V stays frozen


def test_mdn_nll_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    h, z = torch.randn(5, 32), torch.randn(5, Z)
    single = _mdnrnn(mixtures=1)
    out = single.mdn(h)  # layout (p z k): Z logits, Z means, Z log stds
    expected = Normal(out[:, Z : 2 * Z], out[:, 2 * Z :].exp()).log_prob(z)
    torch.testing.assert_close(single.mixture(h).log_prob(z), expected)
    # five components: the official rnn.py formula, logsumexp_k(log_softmax(logmix) + log N(z; mean_k, std_k))
    model = _mdnrnn(mixtures=5)
    logmix, mean, logstd = model.mdn(h).reshape(5, 3, Z, 5).unbind(1)
    lognormal = -0.5 * ((z[..., None] - mean) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)
    expected = torch.logsumexp(logmix.log_softmax(-1) + lognormal, -1)
    torch.testing.assert_close(model.mixture(h).log_prob(z), expected)


def test_temperature_controls_spread() -> None:
    model = _mdnrnn(mixtures=5)
    state = last_step(model.observe(*(_batch()[k][:1] for k in ("image", "action", "is_first"))))
    state = {k: v.expand(256, -1) for k, v in state.items()}
    action = torch.zeros(256, 2)
    torch.manual_seed(0)
    model.temperature = 1e-4
    cold = model.imagine(state, action)
    logits, mean, _ = model.mdn(cold["h"]).reshape(256, 3, Z, 5).unbind(1)
    mode = mean.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)  # mean of the likeliest component
    torch.testing.assert_close(cold["z"], mode, atol=0.05, rtol=0)
    model.temperature = 1.0
    warm = model.imagine(state, action)["z"]
    assert warm.std(0).mean() > 20 * cold["z"].std(0).mean()


def test_imagine_samples_z_from_the_mixture_at_its_temperature() -> None:
    """imagine's own sampler (component by inverse CDF, then Gaussian) draws from mixture(h, tau)."""
    model = _mdnrnn(mixtures=5)
    torch.manual_seed(0)
    state = {"z": torch.zeros(1, Z), "h": 2 * torch.randn(1, 32), "c": torch.randn(1, 32)}
    state = {k: v.expand(20000, -1) for k, v in state.items()}
    model.temperature = 1.15
    z = model.imagine(state, torch.zeros(20000, 2))["z"]  # (20000, Z)
    reference = model.mixture(model.lstm(torch.zeros(1, Z + 2), (state["h"][:1], state["c"][:1]))[0], 1.15)
    expected = reference.sample((20000,))[:, 0]  # torch's MixtureSameFamily sampler
    torch.testing.assert_close(z.mean(0), expected.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), expected.std(0), atol=0.05, rtol=0.05)


def _fixed_posterior_vae(mu: float, logvar: float) -> VAE:
    """A VAE whose encoder ignores the image: mu and logvar are the same numbers for every frame."""
    vae = VAE(image_size=SIZE, z_dim=Z, width=0.25)
    with torch.no_grad():
        for layer, value in ((vae.encoder.mu, mu), (vae.encoder.logvar, logvar)):
            layer.weight.zero_()
            layer.bias.fill_(value)
    return vae


def test_observe_samples_z_as_world_models_encode_obs_and_observe_z_mean_keeps_the_mean() -> None:
    """carracing/model.py encode_obs: z = mu + exp(logvar / 2) * N(0, 1); here mu 0.5, logvar log 4 (std 2)."""
    vae = _fixed_posterior_vae(0.5, math.log(4.0))
    images = torch.zeros(3, 2, SIZE, SIZE, 3, dtype=torch.uint8)  # (B, T, H, W, 3)
    actions, is_first = torch.zeros(3, 2, 2), torch.tensor([[True, False]] * 3)
    torch.manual_seed(7)
    noise = [torch.randn(3, Z) for _ in range(2)]  # the draws observe makes, one time step after the other
    expected = 0.5 + 2.0 * torch.stack(noise, 1)  # (B, T, Z)
    model = _mdnrnn(vae)
    torch.manual_seed(7)
    z = model.observe(images, actions, is_first)["z"]
    torch.testing.assert_close(z, expected)
    torch.manual_seed(7)
    first = model.observe(images[:, :1], actions[:, :1], is_first[:, :1])
    rest = model.observe(images[:, 1:], actions[:, 1:], is_first[:, 1:], last_step(first))
    torch.testing.assert_close(torch.cat([first["z"], rest["z"]], 1), expected)  # two calls draw as one
    mean = _mdnrnn(vae, observe_z="mean").observe(images, actions, is_first)["z"]
    torch.testing.assert_close(mean, torch.full((3, 2, Z), 0.5))
    with pytest.raises(ConfigError, match="observe_z='mode'.*'sample'"):
        _mdnrnn(vae, observe_z="mode")


def test_mdnrnn_checkpoint_reloads_without_vae_file(vae_run: tuple[str, float, float], tmp_path) -> None:
    vae_path = tmp_path / "copy_of_vae.ckpt"
    shutil.copy(vae_run[0], vae_path)
    L.seed_everything(0)
    model = MDNRNN(vae_ckpt=str(vae_path), action_dim=2, hidden=32, mixtures=3)
    trainer = _trainer(2)
    trainer.fit(model, _loader())
    trainer.save_checkpoint(tmp_path / "mdnrnn.ckpt")
    vae_path.unlink()
    assert (
        torch.load(tmp_path / "mdnrnn.ckpt", weights_only=True)["model_class"] == "worldmodels.mdnrnn.MDNRNN"
    )
    for loaded in (
        MDNRNN.load_from_checkpoint(tmp_path / "mdnrnn.ckpt"),
        load_model(tmp_path / "mdnrnn.ckpt"),
    ):
        batch = _batch()
        with torch.no_grad():
            torch.manual_seed(0)  # observe samples z: the same noise for both
            want = model.observe(batch["image"], batch["action"], batch["is_first"])
            torch.manual_seed(0)
            got = loaded.observe(batch["image"], batch["action"], batch["is_first"])
        for k in want:
            assert torch.equal(want[k], got[k])
        assert all(torch.equal(p, q) for p, q in zip(model.vae.parameters(), loaded.vae.parameters()))


def test_bad_vae_ckpt_is_a_clear_error(vae_run: tuple[str, float, float], tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        MDNRNN(vae_ckpt=str(tmp_path / "missing.ckpt"))
    model = MDNRNN(vae_ckpt=vae_run[0], action_dim=2, hidden=8, mixtures=1)
    _trainer(1).fit(model, _loader())
    model.trainer.save_checkpoint(tmp_path / "mdnrnn.ckpt")
    with pytest.raises(CheckpointError, match="holds a MDNRNN"):
        MDNRNN(vae_ckpt=str(tmp_path / "mdnrnn.ckpt"))


def test_action_free_video() -> None:
    L.seed_everything(0)
    model = _mdnrnn(action_dim=0)
    batch = _batch(actions=False)
    assert batch["action"].shape == (4, 12, 0)
    before = _seeded_loss(model, batch)
    _trainer(15).fit(model, _loader(actions=False))
    assert np.isfinite(before) and _seeded_loss(model, batch) < before
    with torch.no_grad():
        states = model.observe(batch["image"], batch["action"], batch["is_first"])
        dream = open_loop(model, last_step(states), torch.zeros(4, 3, 0))
    assert dream["z"].shape == (4, 3, Z) and model.decode(dream).shape == (4, 3, SIZE, SIZE, 3)


def test_fit_cli_trains_vae_then_mdnrnn(tmp_path) -> None:
    """The user's path: `worldmodels fit` a VAE, then an MDN-RNN on it (built inside LightningCLI)."""
    from cli.lightning import fit_cli
    from worldmodels.store import EpisodeStore

    store = EpisodeStore(tmp_path / "store", create=True, metadata={"env": "synthetic"})
    for episode in moving_squares(episodes=4, length=12, size=SIZE):
        store.add(episode)
    common = ["--data.path", str(tmp_path / "store"), "--data.batch_size", "2", "--data.length", "6"]
    common += ["--trainer.max_steps", "2", "--dream_every", "0", "--trainer.enable_progress_bar", "false"]
    fit_cli(["--model", "worldmodels.vae.VAE", "--model.width", "0.25", "--model.z_dim", str(Z), *common,
             "--trainer.default_root_dir", str(tmp_path / "vae")])  # fmt: skip
    vae_path = tmp_path / "vae" / "checkpoints" / "last.ckpt"
    fit_cli(["--model", "worldmodels.mdnrnn.MDNRNN", "--model.vae_ckpt", str(vae_path), "--model.hidden", "16",
             *common, "--trainer.default_root_dir", str(tmp_path / "m")])  # fmt: skip
    vae = load_model(vae_path)
    vae_path.unlink()
    model = load_model(tmp_path / "m" / "checkpoints" / "last.ckpt")
    assert isinstance(model, MDNRNN) and (model.image_size, model.z_dim, model.action_dim) == (SIZE, Z, 2)
    assert model.vae.width == 0.25 and model.hparams.vae_ckpt is None
    images = _batch()["image"]
    assert torch.equal(model.vae.encode(images)[0], vae.encode(images)[0])
