"""`worldmodels play` (cli/play.py): the JSON endpoints through Flask's test client, every model family and both
action kinds, resets from a store frame and from the live env, the env beside the dream, agents taking over, the
one-line errors; and the page itself in headless Chromium (Debian's chromium + chromium-driver, which .ci/run
installs), driven with the keyboard."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from agents.controller import Controller, ControllerAgent
from agents.distill import DistilledPolicy
from agents.dreamer import DreamerAgent
from agents.planet import PlaNetAgent
from cli.play import PlaySession, build_session, create_app, pixel_error, serve
from tests.cli import COMMAND, ROOT, cli_env, run_cli
from tests.synthetic import moving_squares
from worldmodels import envs
from worldmodels.errors import CheckpointError
from worldmodels.mdnrnn import MDNRNN
from worldmodels.rssm import RSSM
from worldmodels.store import EpisodeStore
from worldmodels.vae import VAE

SIZE = 16
POINT = "worldmodels.pixel_point:PixelPoint-v0"  # 1-dim continuous actions, 16 px, reward 1 - |x|
TINY = dict(deter=16, hidden=16, cnn_depth=4, stoch=4, classes=4)
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def rssm(action_dim: int, discrete: bool = False) -> RSSM:
    """An untrained tiny RSSM whose reward head is not the DreamerV3 zeros: its predicted reward depends on the
    state, as a trained model's does."""
    torch.manual_seed(0)
    model = RSSM("dreamerv3-XS", image_size=SIZE, action_dim=action_dim, discrete=discrete, **TINY)
    torch.nn.init.normal_(model.reward_head[-1].weight, std=1.0)
    return model.eval()


def save(module: L.LightningModule, path: Path) -> str:
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return str(path)


def decode(url: str) -> np.ndarray:
    """A ``data:image/png;base64,...`` URL -> (H, W, 3) uint8."""
    assert url.startswith("data:image/png;base64,")
    return np.array(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Checkpoints: a 2-dim RSSM (moving squares), a 1-dim RSSM and a Dreamer agent (PixelPoint), a VAE; a store."""
    root = tmp_path_factory.mktemp("play")
    store = EpisodeStore(root / "store", create=True)
    for episode in moving_squares(episodes=2, length=12, size=SIZE, seed=3):
        store.add(episode)
    torch.manual_seed(0)
    agent = DreamerAgent(
        {"class_path": "worldmodels.rssm.RSSM", "init_args": {"preset": "dreamerv3-XS", **TINY}},
        image_size=SIZE,
        action_dim=1,
        horizon=2,
        hidden=16,
        actor_layers=1,
        critic_layers=1,
    )
    torch.nn.init.normal_(agent.actor.net[-1].weight, std=1.0)  # its actions vary with the state
    return {
        "store": str(store.root),
        "rssm2": save(rssm(2), root / "rssm2.ckpt"),
        "rssm1": save(rssm(1), root / "rssm1.ckpt"),
        "dreamer": save(agent, root / "dreamer.ckpt"),
        "vae": save(VAE(SIZE, z_dim=4, width=0.25), root / "vae.ckpt"),
    }


# --- the JSON endpoints -------------------------------------------------------------------------------------


def test_continuous_actions_steer_the_dream_and_a_reset_replays_it(files):
    session = build_session(files["rssm2"])
    client = create_app(session).test_client()
    info = client.get("/api/info").get_json()
    assert (info["family"], info["action_dim"], info["discrete"], info["image_size"]) == (
        "RSSM",
        2,
        False,
        SIZE,
    )
    assert info["sources"] == ["initial"] and info["agent"] is None

    def first_step(action: list[float]) -> dict:
        reset = client.post("/api/reset", json={"source": "initial"}).get_json()
        assert reset["t"] == 0 and reset["by"] == "reset" and "real" not in reset
        return client.post("/api/step", json={"action": action}).get_json()

    left, right, again = first_step([-1.0, 0.0]), first_step([1.0, 0.0]), first_step([-1.0, 0.0])
    assert left["t"] == 1 and left["by"] == "you" and left["action"] == [-1.0, 0.0]
    assert decode(left["dream"]).shape == (SIZE, SIZE, 3)
    assert left["dream"] == again["dream"] and left["reward"] == again["reward"]  # reset re-seeds the dream
    assert not np.array_equal(decode(left["dream"]), decode(right["dream"]))  # the action made the difference
    assert left["reward"] != right["reward"]
    assert 0.0 <= left["cont"] <= 1.0 and left["dream_ms"] > 0
    follow = client.post("/api/step", json={"action": [5.0, -5.0]}).get_json()  # clipped to [-1, 1]
    assert follow["t"] == 2 and follow["action"] == [1.0, -1.0]
    assert follow["return"] == pytest.approx(again["reward"] + follow["reward"])  # summed since the reset
    # the dream is the model's own state: the page's frame is model.decode(model.imagine(...))
    torch.manual_seed(0)
    state = session.model.imagine(session.model.initial(1), torch.tensor([[1.0, 0.0]]))
    assert np.array_equal(decode(right["dream"]), session.model.decode(state)[0].numpy())

    for bad in ([1.0], "left", [1.0, float("nan")]):
        response = client.post("/api/step", json={"action": bad})
        assert (
            response.status_code == 400 and "give a list of 2 finite numbers" in response.get_json()["error"]
        )
    response = client.post("/api/policy", json={"on": True})
    assert response.status_code == 400 and "no agent" in response.get_json()["error"]
    response = client.post("/api/reset", json={"source": "env"})
    assert response.status_code == 400 and "--env SPEC" in response.get_json()["error"]


def test_discrete_actions_on_the_vae_mdnrnn_pair():
    torch.manual_seed(0)
    model = MDNRNN(
        vae=VAE(SIZE, z_dim=4, width=0.25), action_dim=3, discrete=True, hidden=16, mixtures=2
    ).eval()
    torch.nn.init.normal_(model.reward_head.weight, std=1.0)
    client = create_app(PlaySession(model)).test_client()
    info = client.get("/api/info").get_json()
    assert (info["family"], info["action_dim"], info["discrete"]) == ("MDNRNN", 3, True)

    def first_step(action: object) -> dict:
        client.post("/api/reset", json={})
        return client.post("/api/step", json={"action": action}).get_json()

    two, zero, one_hot_two = first_step(2), first_step(0), first_step([0, 0, 1])
    assert two["action"] == [0.0, 0.0, 1.0] and zero["action"] == [1.0, 0.0, 0.0]
    assert one_hot_two["dream"] == two["dream"]
    assert two["reward"] != zero["reward"]  # the LSTM saw another action
    assert first_step(None)["action"] == [1.0, 0.0, 0.0]  # space: action 0
    for bad in (3, -1, 1.5, True):
        response = client.post("/api/step", json={"action": bad})
        assert response.status_code == 400 and "action index 0..2" in response.get_json()["error"]


def test_a_reset_from_a_store_frame_filters_its_context_and_shows_the_frame(files):
    session = build_session(files["rssm2"], data=files["store"], context=3)
    client = create_app(session).test_client()
    info = client.get("/api/info").get_json()
    assert (
        info["sources"] == ["data", "initial"] and info["source"] == "data" and info["episodes"] == [12, 12]
    )
    out = client.post("/api/reset", json={"source": "data", "episode": 1, "frame": 6}).get_json()
    assert (out["episode"], out["frame"]) == (1, 6) and "episode 1 frame 6" in out["real"]["label"]
    episode = EpisodeStore(files["store"]).episode(1)
    assert np.array_equal(decode(out["real"]["frame"]), episode["image"][6])
    # the dream starts from the posterior after frames 4, 5, 6 (context 3), the first of them a new start
    model = session.model
    images = torch.from_numpy(episode["image"][4:7])[None]
    actions = torch.from_numpy(episode["action"][4:7].astype(np.float32))[None]
    actions[:, 0] = 0
    torch.manual_seed(0)
    posterior = model.observe(images, actions, torch.tensor([[True, False, False]]))
    expected = model.decode({k: v[:, -1] for k, v in posterior.items()})[0].numpy()
    assert np.array_equal(decode(out["dream"]), expected)
    error, _ = pixel_error(expected, episode["image"][6])
    assert out["real"]["error"] == pytest.approx(error)
    assert client.post("/api/reset", json={}).get_json()["dream"] == out["dream"]  # the same frame again
    for body, message in (
        ({"source": "data", "episode": 2}, "episode 2 is not there"),
        ({"source": "data", "episode": 0, "frame": 12}, "frames 0..11, not 12"),
        ({"source": "data", "episode": "x"}, "whole number"),
        ({"source": "tape"}, "unknown"),
    ):
        response = client.post("/api/reset", json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]


def test_the_env_steps_beside_the_dream_with_the_same_actions_and_a_per_step_error(files):
    session = build_session(files["rssm1"], env=POINT, seed=7)
    client = create_app(session).test_client()
    assert client.get("/api/info").get_json()["sources"] == ["env", "initial"]
    reference = envs.make(POINT, size=SIZE, seed=7)
    obs, _ = reference.reset(seed=7)
    out = client.post("/api/reset", json={}).get_json()  # the env is the default source
    assert np.array_equal(decode(out["real"]["frame"]), obs)
    for action in ([0.5], [-1.0], [1.0]):
        step = client.post("/api/step", json={"action": action}).get_json()
        obs, reward, *_ = reference.step(np.array(action, np.float32))
        real = step["real"]
        assert np.array_equal(decode(real["frame"]), obs) and real["reward"] == pytest.approx(reward)
        dream = decode(step["dream"])
        assert real["error"] == pytest.approx(np.mean((dream / 255 - obs / 255) ** 2), rel=1e-5)
        assert np.array_equal(decode(real["error_frame"]), pixel_error(dream, obs)[1])
        assert real["done"] is False
    assert real["return"] == pytest.approx(session.real_return) and session.real_return > 0
    second = client.post("/api/reset", json={"source": "env"}).get_json()
    assert "episode seed 8" in second["real"]["label"]  # every env reset is a new episode
    reference.close()
    session.close()


def test_the_env_is_only_touched_on_the_sessions_one_thread_whatever_thread_serves(files):
    """dm_control's EGL context is current on one thread; the threaded server serves each request on a new one."""
    session = build_session(files["rssm1"], env=POINT)
    threads = []
    for name in ("reset", "step"):
        method = getattr(session.env, name)
        setattr(
            session.env, name, lambda *a, _m=method, **k: threads.append(threading.get_ident()) or _m(*a, **k)
        )
    server = serve(create_app(session), 0)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        for path, body in (("reset", {"source": "env"}), ("step", {"action": [0.5]}), ("step", {})):
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.port}/api/{path}",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["real"]["frame"].startswith("data:image/png")
    finally:
        server.shutdown()
        session.close()
    assert len(threads) == 3 and len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_an_env_or_data_that_does_not_fit_the_model_is_one_line_error(files):
    with pytest.raises(
        CheckpointError, match=r"expects 2-dim continuous actions and 16px.*has 1-dim continuous"
    ):
        build_session(files["rssm2"], env=POINT)
    with pytest.raises(CheckpointError, match=r"has 2-dim continuous actions but .* 1-dim continuous"):
        build_session(files["rssm1"], data=files["store"])
    with pytest.raises(CheckpointError, match=r"holds a VAE alone"):
        build_session(files["vae"])


def test_cli_refuses_a_checkpoint_that_is_neither_a_world_model_nor_an_agent(tmp_path):
    notes = tmp_path / "notes.ckpt"
    torch.save({"model_class": "something.Else", "state_dict": {}}, notes)
    result = run_cli("play", "--ckpt", str(notes), "--no_browser", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "neither a world model nor an agent" in lines[0], result.stderr


def test_an_agent_checkpoint_drives_in_the_dream_and_in_the_env(files):
    session = build_session(files["dreamer"], env=POINT)
    client = create_app(session).test_client()
    info = client.get("/api/info").get_json()
    assert info["agent"] == "DreamerAgent" and info["sees"] == ["dream", "env"] and "actor" in info["policy"]
    client.post("/api/reset", json={})
    policy = client.post("/api/policy", json={"on": True, "sees": "dream"}).get_json()
    assert policy["on"] and policy["sees"] == "dream"
    actions = []
    for _ in range(3):
        expected = session.agent.policy(session.model.features(session.state))[0].tolist()
        step = client.post("/api/step", json={"action": [1.0]}).get_json()  # keys are ignored while it drives
        assert step["by"] == "agent" and step["action"] == pytest.approx(expected)
        assert step["real"]["reward"] is not None  # the env got the agent's action too
        actions.append(step["action"][0])
    assert len(set(actions)) > 1  # it reacts to the dream state
    policy = client.post("/api/policy", json={"on": True, "sees": "env"}).get_json()
    assert policy["sees"] == "env" and "real env frame" in policy["how"]
    obs = torch.from_numpy(session.real_obs[None].copy())
    rng = torch.get_rng_state()
    expected, _ = session.agent.act(obs, torch.tensor([True]), None, False)
    torch.set_rng_state(rng)  # the same posterior sample as the session's call below
    step = client.post("/api/step", json={}).get_json()
    assert step["by"] == "agent" and step["action"] == pytest.approx(expected[0].tolist())
    assert step["t"] == 4 and step["real"]["reward"] is not None
    assert client.post("/api/policy", json={"on": False}).get_json()["on"] is False
    assert client.post("/api/step", json={"action": [0.25]}).get_json()["by"] == "you"
    session.close()


@pytest.mark.parametrize("kind", ["controller", "planet", "distilled"])
def test_every_agent_kind_acts_on_the_dream_state(kind):
    model = rssm(2)
    torch.manual_seed(1)
    if kind == "controller":
        controller = Controller(model.feature_dim, 2, False)  # linear: tanh(f W + b)
        params = torch.randn(1, controller.num_params) * 0.3
        agent = ControllerAgent(model, controller, params)
        weight = params[0, : model.feature_dim * 2].reshape(model.feature_dim, 2)
        bias = params[0, model.feature_dim * 2 :]
        expect = lambda state: torch.tanh(model.features(state) @ weight + bias)
    elif kind == "planet":
        agent = PlaNetAgent(
            model, planner_options=dict(horizon=2, candidates=12, iterations=1, top_k=3)
        ).eval()
        expect = None  # a sampled plan: checked for shape and range, and that the plan is carried
    else:
        agent = DistilledPolicy(model, hidden=(8,)).eval()
        expect = lambda state: agent(model.features(state))  # the MLP's tanh output
    session = PlaySession(model, agent)
    client = create_app(session).test_client()
    client.post("/api/reset", json={})
    assert client.post("/api/policy", json={"on": True}).get_json()["how"] == session.policy.how
    for _ in range(2):
        wanted = expect(session.state)[0].tolist() if expect is not None else None
        step = client.post("/api/step", json={"action": [0.5, 0.5]}).get_json()
        assert step["by"] == "agent" and len(step["action"]) == 2
        assert all(-1.0 <= a <= 1.0 for a in step["action"])
        if wanted is not None:
            assert step["action"] == pytest.approx(wanted, abs=1e-5)
    if kind == "planet":
        assert session.policy.carry is not None  # the plan warm-starts the next step
    response = client.post("/api/policy", json={"on": True, "sees": "env"})
    assert response.status_code == 400 and "--env SPEC" in response.get_json()["error"]


class FrameAgent:
    """An agent of no class play knows: it acts through ``act`` alone, steering by the mean colour it sees."""

    def __init__(self, model: RSSM) -> None:
        self.world_model, self.action_dim = model, model.action_dim
        self.seen: list[tuple[np.ndarray, bool]] = []

    def act(self, obs, is_first, state, explore):  # noqa: ANN001, ANN201
        self.seen.append((obs[0].numpy().copy(), bool(is_first[0])))
        value = obs.float().mean() / 127.5 - 1
        return torch.stack([value, -value])[None].clamp(-1, 1), (state or 0) + 1


def test_any_other_agent_acts_on_the_decoded_dream_frames():
    model = rssm(2)
    agent = FrameAgent(model)
    session = PlaySession(model, agent)
    client = create_app(session).test_client()
    assert "decoded dream frames" in client.get("/api/info").get_json()["policy"]
    client.post("/api/reset", json={})
    client.post("/api/policy", json={"on": True})
    shown = decode(client.post("/api/step", json={}).get_json()["dream"])
    step = client.post("/api/step", json={}).get_json()
    assert [first for _, first in agent.seen] == [True, False]  # its filter starts where it takes over
    assert np.array_equal(agent.seen[1][0], shown)  # it saw the frame the page showed
    value = shown.astype(np.float32).mean() / 127.5 - 1
    assert step["by"] == "agent" and step["action"] == pytest.approx([value, -value], abs=1e-5)


# --- the page in a real browser -----------------------------------------------------------------------------


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """`worldmodels play ARGS --port 0 --no_browser` in a subprocess -> (process, the URL it printed)."""
    process = subprocess.Popen(
        [*COMMAND, "play", *args, "--port", "0", "--no_browser"],
        cwd=ROOT,
        env=dict(cli_env(), OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()  # "playing CKPT at http://127.0.0.1:PORT/ (Ctrl-C stops)"
    if " at http://" not in line:
        process.kill()
        raise AssertionError(f"no URL printed: {line!r}; stderr: {process.stderr.read()}")
    return process, line.split(" at ", 1)[1].split()[0]


@pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)
def test_the_page_in_headless_chromium_moves_the_dream_with_the_arrow_keys(files, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = start_server("--ckpt", files["rssm2"], "--data", files["store"], "--frame", "6")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,800",
    ):
        options.add_argument(flag)
    # the driver's path given: Selenium Manager (which would download a browser) never runs
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 30)
        text = lambda element: driver.find_element(By.ID, element).text
        src = lambda: driver.find_element(By.ID, "dream").get_attribute("src")

        def press(key: str, step: str) -> tuple[str, str]:
            """Press ``key``; wait for the step counter to read ``step`` -> (the dream's PNG URL, reward text)."""
            ActionChains(driver).send_keys(key).perform()
            wait.until(lambda _: text("step") == step)
            return src(), text("reward")

        wait.until(lambda _: text("step") == "0" and src().startswith("data:image/png"))
        start, start_reward = src(), text("reward")
        assert driver.find_element(By.ID, "frame").get_attribute("value") == "6"
        assert "episode 0 frame 6" in text("real-label")  # the store frame beside the dream
        left, left_reward = press(Keys.ARROW_LEFT, "1")
        assert left != start and left_reward != start_reward and text("action") == "[-1.00, 0.00]"
        assert press("r", "0")[0] == start  # a reset goes back to the same dream
        right, right_reward = press(Keys.ARROW_RIGHT, "1")
        assert right != left and right_reward != left_reward  # frames and reward follow the action
        up, _ = press(Keys.ARROW_UP, "2")
        assert text("action") == "[0.00, 1.00]" and up != right
        driver.find_element(By.ID, "btn-down").click()  # the on-screen controls do the same
        wait.until(lambda _: text("step") == "3")
        assert text("action") == "[0.00, -1.00]"
        press("R", "0")
        assert press(Keys.ARROW_LEFT, "1")[0] == left  # the same key from the same reset: the same dream
        assert float(text("reward")) == pytest.approx(float(left_reward), abs=1e-3)
        shot = tmp_path / "play.png"
        assert driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= 800
        assert not text("status")  # no request failed
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=30)
