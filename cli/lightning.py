"""`worldmodels fit` and `worldmodels agent planet|dreamer`: LightningCLI over the toolkit's modules.

    worldmodels fit -c configs/rssm_dmc.yaml --data.path data/cartpole --trainer.max_steps 10000
    worldmodels fit -c configs/rssm_dmc.yaml --ckpt_path last        # resume the run in trainer.default_root_dir
    worldmodels agent dreamer -c configs/dreamer_walker.yaml --world_model.ckpt runs/fit/checkpoints/last.ckpt

The model's ``action_dim``, ``discrete`` and ``image_size`` are taken from the data. Every run writes into
``trainer.default_root_dir`` (default ``runs/fit``): ``checkpoints/`` (``last.ckpt`` plus periodic ones),
TensorBoard events and ``csv/version_N/metrics.csv``; the TensorBoard logs show open-loop dream videos during
training.

Agent runs add three top-level keys (recipe or command line): ``world_model`` (``{ckpt: PATH}`` or
``{class_path: ..., init_args: {...}}``, the head's default model when absent; ``ckpt`` wins when both are
given, so ``--world_model.ckpt`` overrides a recipe's fresh model), ``train_world_model`` (fine-tune the model
online, or keep it frozen) and ``offline`` (learn from ``data.path`` alone, no environment). The run's image
size (``data.size``) defaults to the loaded model's.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from agents.evaluate import EvalLoop
from agents.online import EnvLoop, OnlineDataModule
from worldmodels import notices
from worldmodels.checkpoints import checkpoint_spec
from worldmodels.data import SequenceDataModule
from worldmodels.dreaming import DreamVideoCallback
from worldmodels.guards import AtomicCheckpointIO, RNGState
from worldmodels.interface import WorldModel

warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
# Lightning's start-up chatter that tells a user of these commands nothing they need (issue #20): the offline
# data modules have no validation loader by design (an empty list without a held-out split); the torch-internal
# deprecation is Lightning's to fix; the checkpoint hint on a fresh `--ckpt_path last` is replaced by
# `say_resume`; the seed is in config.yaml.
for _message in (
    ".*You defined a `validation_step` but have no `val_dataloader`.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*there is no last checkpoint available.*",
    ".*Total length of `list` across ranks is zero.*",  # no validation split (val_fraction 0): on purpose
    "No seed found, seed set to.*",
):
    warnings.filterwarnings("ignore", message=_message)
CHATTER = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "\N{ELECTRIC LIGHT BULB} Tip:",
    "Seed set to",
)


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(CHATTER)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
    logging.getLogger(_name).addFilter(_DropChatter())


NOTICES = "worldmodels.log"  # <run>/worldmodels.log: the files a run's data skipped, and why (worldmodels/notices.py)


def say_resume(ckpt_path: str | None, root: Path) -> None:
    """One line on what ``--ckpt_path`` does in this run (Lightning's own hint names a setting we always set)."""
    if ckpt_path == "last":
        last = root / "checkpoints" / "last.ckpt"
        print(f"resuming from {last}" if last.exists() else f"--ckpt_path last: no {last} yet, a fresh run")
    elif ckpt_path:
        print(f"resuming from {ckpt_path}")


class PlainProgress(L.Callback):
    """Progress for a log that is not a terminal, where a progress bar would write a line per refresh: one plain
    line every ``every`` training steps with the step, max_steps and the logged losses."""

    def __init__(self, every: int = 100) -> None:
        self.every = every

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.every:
            return
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        metrics = trainer.callback_metrics
        shown = [
            f"{k} {float(v):.4g}"
            for k, v in metrics.items()
            if k.endswith(("loss", "return")) and v.numel() == 1
        ]
        print(f"step {trainer.global_step}{total}: " + ", ".join(shown[:6]), flush=True)


def cpu_has_amx_bf16() -> bool:
    """Whether this (Linux) CPU has AMX-BF16 tiles, where bf16 matmuls run several times faster than fp32."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


class CostEstimate(L.Callback):
    """Say what a run costs where it bites: after ``after`` training steps, the seconds per step so far and the
    time to ``max_steps`` (evaluations and data collection included, as they happened in those steps); warn
    once at the start when a bf16 precision runs on a CPU (recipes mark it for GPUs)."""

    def __init__(self, after: int = 20) -> None:
        self.after, self.start, self.first = after, 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.first = time.perf_counter(), trainer.global_step
        if str(trainer.precision).startswith("bf16") and pl_module.device.type == "cpu":
            if cpu_has_amx_bf16():  # docs/benchmarks.md: DreamerV3-S update 3.25 s in bf16, 5.25 s in fp32
                how = "this CPU has AMX-BF16, where bf16 autocast runs the DreamerV3-S update ~1.6x faster than fp32"
            else:
                how = "this CPU lacks AMX-BF16, so bf16 is emulated and slower than fp32: pass --trainer.precision 32-true"
            pl_module.print(f"note: precision {trainer.precision} on a CPU (recipes mark it for GPUs): {how}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = trainer.global_step - self.first
        if done != self.after:
            return
        per_step = (time.perf_counter() - self.start) / done
        text = f"cost: {per_step:.2f} s per training step over the first {done}"
        if trainer.max_steps and trainer.max_steps > 0:
            left = max(0, trainer.max_steps - trainer.global_step)
            text += (
                f"; {left} steps to max_steps {trainer.max_steps}: about {left * per_step / 60:.0f} min more"
            )
        pl_module.print(text, flush=True)


class WorldModelCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        model = "model.init_args" if self.subclass_mode_model else "model"
        for key in ("action_dim", "discrete", "image_size"):
            parser.link_arguments(f"data.{key}", f"{model}.{key}", apply_on="instantiate")
        parser.add_argument("--checkpoint_every", type=int, default=500, help="save last.ckpt every N steps")
        parser.add_argument(
            "--dream_every", type=int, default=1000, help="log a dream video every N steps (0: off)"
        )

    def options(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_fit(self) -> None:
        root = Path(self.trainer.default_root_dir)
        notices.to_file(root / NOTICES)  # files the data skipped, also in the run's folder
        say_resume(self.options().get("ckpt_path"), root)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        root = Path(config.get("default_root_dir") or "runs/fit")
        config["default_root_dir"] = str(root)
        config.setdefault("plugins", None)
        if config["plugins"] is None:
            config["plugins"] = [AtomicCheckpointIO()]  # a kill while saving leaves the previous checkpoint
        if config.get("logger") in (None, True):
            # TensorBoard events go to one fixed dir, so a resumed run continues the same curves; the CSV logger
            # would overwrite metrics.csv there, so each (re)start gets its own csv/version_N/metrics.csv.
            config["logger"] = [TensorBoardLogger(root, name="", version=""), CSVLogger(root, name="csv")]
        options = self.options()
        if config.get("enable_progress_bar") is None and not sys.stderr.isatty():  # a log file: plain lines
            config["enable_progress_bar"] = False
            callbacks = [*callbacks, PlainProgress()]
        callbacks = list(callbacks) + [
            RNGState(),
            CostEstimate(),
            ModelCheckpoint(
                dirpath=root / "checkpoints",
                filename="step{step}",
                auto_insert_metric_name=False,
                every_n_train_steps=options["checkpoint_every"],
                save_last=True,
                save_top_k=-1,
                # a fresh run in an old folder replaces last.ckpt instead of writing last-v1.ckpt beside it, so
                # `dream`/`eval` on .../last.ckpt read the newest model (each save is atomic: AtomicCheckpointIO)
                enable_version_counter=False,
            ),
        ]
        if options["dream_every"] > 0 and isinstance(self.model, WorldModel):  # a VAE or an agent does not
            callbacks.append(DreamVideoCallback(every_n_steps=options["dream_every"]))
        return super()._instantiate_trainer(config, callbacks)


def fit_cli(argv: list[str]) -> None:
    """Run LightningCLI's `fit` with our DataModule and any LightningModule from worldmodels."""
    WorldModelCLI(
        model_class=L.LightningModule,
        subclass_mode_model=True,
        datamodule_class=SequenceDataModule,
        args=["fit", *argv],
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs/fit", "log_every_n_steps": 10},
        auto_configure_optimizers=False,
    )


def world_model_from(ckpt: str | None, class_path: str | None, init_args: dict | None) -> dict | None:
    """The ``world_model`` keys -> the spec an agent is built with (worldmodels/checkpoints.py); ckpt wins."""
    if ckpt:
        return {"ckpt": ckpt}
    if class_path:
        return {"class_path": class_path, "init_args": init_args or {}}
    return None


class AgentCLI(WorldModelCLI):
    """The agent heads' command line: ``world_model``, ``train_world_model``, ``offline`` and ``ckpt_path``
    beside the model, data and trainer sections (module docstring)."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--world_model.ckpt",
            type=str | None,
            default=None,
            help="a checkpoint of `worldmodels fit` or of an agent run: the world model this head reuses",
        )
        parser.add_argument(
            "--world_model.class_path",
            type=str | None,
            default=None,
            help="a fresh world model instead: e.g. worldmodels.rssm.RSSM (default: the head's own)",
        )
        parser.add_argument("--world_model.init_args", type=dict | None, default=None, help="its arguments")
        parser.add_argument(
            "--train_world_model",
            type=bool,
            default=True,
            help="fine-tune the world model (true) or keep it frozen (false)",
        )
        parser.add_argument(
            "--offline",
            type=bool,
            default=False,
            help="learn from data.path alone (a store, or videos with sidecar actions and rewards): no env",
        )
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="resume a run: last, or a .ckpt path"
        )
        parser.add_argument(
            "--eval_every",
            type=int,
            default=0,
            help="evaluate every N env steps (and at the start): eval/return in the logs and <run>/eval.csv (0: off)",
        )
        parser.add_argument("--eval_episodes", type=int, default=10, help="episodes per evaluation")
        parser.add_argument(
            "--eval_explore", type=bool, default=False, help="evaluate sampled actions instead of the mode"
        )
        keys = ("world_model.ckpt", "world_model.class_path", "world_model.init_args")
        parser.link_arguments(keys, "model.world_model", compute_fn=world_model_from)
        parser.link_arguments("train_world_model", "model.train_world_model")
        parser.link_arguments("offline", "data.offline")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        options = self.options()
        if options["eval_every"] <= 0:
            return super()._instantiate_trainer(config, callbacks)
        loop = EvalLoop(options["eval_every"], options["eval_episodes"], options["eval_explore"])
        trainer = super()._instantiate_trainer(config, [*callbacks, loop])
        # Lightning puts the trainer_defaults' callbacks (the env loop) last; the evaluation goes after the env
        # loop, so that it sees the episodes collected in the same step
        order = trainer.callbacks
        order.remove(loop)
        order.insert(next(i for i, c in enumerate(order) if isinstance(c, EnvLoop)) + 1, loop)
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.options()
        if config.data.size is None and config.world_model.ckpt:  # the run's images: the model's size
            config.data.size = checkpoint_spec(config.world_model.ckpt)["init_args"]["image_size"]


class PrintHyperparameters(L.Callback):
    """Print the agent's hyperparameters in force once, before training (the recipe's nulls resolved)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            hparams = {k: v for k, v in pl_module.hparams.items() if not k.startswith("_")}
            text = yaml.safe_dump({"model": hparams}, sort_keys=False, default_flow_style=None)
            print(f"{type(pl_module).__name__} hyperparameters in force:\n{text}", flush=True)


def agent_cli(agent_class: type[L.LightningModule], argv: list[str], prog: str, description: str) -> None:
    """`worldmodels agent NAME -c RECIPE.yaml`: LightningCLI over ``agent_class`` and ``OnlineDataModule``,
    with the env loop, checkpoints (``--ckpt_path last`` resumes) and TensorBoard/CSV logs of `worldmodels fit`."""
    # Lightning warns that manual optimization checkpoints hold the state after the step: that is what we want.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    cli = AgentCLI(
        model_class=agent_class,
        datamodule_class=OnlineDataModule,
        args=argv,
        run=False,
        parser_kwargs={"prog": prog, "description": description},
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": f"runs/{agent_class.__name__.lower()}",
            "log_every_n_steps": 10,
            "callbacks": [EnvLoop(), PrintHyperparameters()],
            "max_steps": -1,
            "max_epochs": -1,  # replay is an endless stream: stop by max_steps or data.max_env_steps
        },
        auto_configure_optimizers=False,
    )
    root = Path(cli.trainer.default_root_dir)
    notices.to_file(root / NOTICES)  # files the replay skipped, also in the run's folder
    say_resume(cli.config.ckpt_path, root)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    dm = cli.datamodule
    if not dm.offline:  # offline runs know no env: `worldmodels eval --env SPEC` is theirs to name
        repeat = f" --action_repeat {dm.action_repeat}" if dm.action_repeat else ""
        print(
            f"evaluate it: worldmodels eval --ckpt {root / 'checkpoints' / 'last.ckpt'} --env {dm.env_spec}"
            f"{repeat} --episodes 10"
        )
