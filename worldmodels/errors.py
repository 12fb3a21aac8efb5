"""Exceptions a user can cause. The CLI prints them in one line and exits with status 2.

Every message says what went wrong, which file or value, and what to do about it.
"""

from __future__ import annotations


class WorldModelsError(Exception):
    """Base class: an error caused by the user's input, not by a bug in the toolkit."""


class UnknownEnvError(WorldModelsError, ValueError):
    """An environment spec that names no dm_control task and no registered gymnasium id."""


class CorruptEpisodeError(WorldModelsError):
    """An episode file that cannot be read or fails validation."""


class StoreError(WorldModelsError):
    """An episode store that is missing, empty or inconsistent (e.g. mixed image shapes)."""


class VideoError(WorldModelsError):
    """A video file or frame folder that cannot be decoded or converted."""


class SidecarError(VideoError):
    """A `<stem>.npz` sidecar whose arrays are missing or whose length differs from the video."""


class FormatError(WorldModelsError):
    """A dataset of another toolkit (HDF5, Minari, LeRobot) whose layout is not understood: names the file and
    the field (worldmodels/formats.py, docs/datasets.md)."""


class CheckpointError(WorldModelsError):
    """A checkpoint of another model type, or one used with data of another shape."""


class ConfigError(WorldModelsError):
    """An unknown or mistyped configuration key or value."""


class NonFiniteLossError(WorldModelsError, FloatingPointError):
    """A NaN or inf loss term during training."""
