"""Telling the user what a reader skipped, in a way no warnings filter hides.

Readers (episode stores, video folders) skip a file they cannot use (corrupt, NaN rewards, truncated video) and
go on. They say so on the ``worldmodels`` logger, not through Python's ``warnings``: ``PYTHONWARNINGS=ignore``, a
common setting in scripts, would otherwise train on a store with files left out and nothing said. Without any
configuration Python prints such a record on stderr (logging's last-resort handler); the command line prints it
as ``worldmodels: warning: ...`` (``to_stderr``), and a training run also writes it to ``<run>/worldmodels.log``
(``to_file``), so the run's folder says which files its data lacked.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOGGER = logging.getLogger("worldmodels")
FORMAT = "worldmodels: warning: %(message)s"


def skipped(message: str) -> None:
    """Report one skipped file and why, e.g. ``skipping corrupt episode data/x.npz: reward contains NaN``."""
    LOGGER.warning(message)


def to_stderr() -> None:
    """Print notices on stderr as ``worldmodels: warning: ...`` (once, however often it is called)."""
    if not any(getattr(h, "_worldmodels", False) for h in LOGGER.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._worldmodels = True  # type: ignore[attr-defined]
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)


def to_file(path: str | Path) -> logging.Handler:
    """Also write notices to ``path`` (appending, with a time stamp); returns the handler (``removeHandler`` it
    to stop)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s " + FORMAT))
    LOGGER.addHandler(handler)
    if LOGGER.level == logging.NOTSET or LOGGER.level > logging.WARNING:
        LOGGER.setLevel(logging.WARNING)
    return handler
