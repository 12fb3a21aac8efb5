"""`worldmodels fit`: train any world model from a YAML recipe with LightningCLI.

    worldmodels fit -c configs/rssm_dmc.yaml --data.path data/cartpole --trainer.max_steps 10000
    worldmodels fit -c configs/rssm_dmc.yaml --ckpt_path last        # resume the run in trainer.default_root_dir

The model's ``action_dim``, ``discrete`` and ``image_size`` are taken from the data. Every run writes into
``trainer.default_root_dir`` (default ``runs/fit``): ``checkpoints/`` (``last.ckpt`` plus periodic ones),
TensorBoard events and ``csv/version_N/metrics.csv``; the TensorBoard logs show open-loop dream videos during training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from worldmodels.data import SequenceDataModule
from worldmodels.dreaming import DreamVideoCallback
from worldmodels.guards import AtomicCheckpointIO, RNGState
from worldmodels.interface import WorldModel


class WorldModelCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        model = "model.init_args" if self.subclass_mode_model else "model"
        for key in ("action_dim", "discrete", "image_size"):
            parser.link_arguments(f"data.{key}", f"{model}.{key}", apply_on="instantiate")
        parser.add_argument("--checkpoint_every", type=int, default=500, help="save last.ckpt every N steps")
        parser.add_argument(
            "--dream_every", type=int, default=1000, help="log a dream video every N steps (0: off)"
        )

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
        options = self.config[self.subcommand] if self.subcommand else self.config
        callbacks = list(callbacks) + [
            RNGState(),
            ModelCheckpoint(
                dirpath=root / "checkpoints",
                filename="step{step}",
                auto_insert_metric_name=False,
                every_n_train_steps=options["checkpoint_every"],
                save_last=True,
                save_top_k=-1,
            ),
        ]
        if options["dream_every"] > 0 and isinstance(self.model, WorldModel):  # a VAE alone cannot dream
            callbacks.append(DreamVideoCallback(every_n_steps=options["dream_every"]))
        return super()._instantiate_trainer(config, callbacks)


def fit_cli(argv: list[str]) -> None:
    """Run LightningCLI's `fit` with our DataModule and any LightningModule from worldmodels."""
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    WorldModelCLI(
        model_class=L.LightningModule,
        subclass_mode_model=True,
        datamodule_class=SequenceDataModule,
        args=["fit", *argv],
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs/fit", "log_every_n_steps": 10},
        auto_configure_optimizers=False,
    )
