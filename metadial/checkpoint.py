"""Periodic checkpoints of a whole training state with orbax-checkpoint (atomic writes, last few kept)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orbax.checkpoint as ocp
from absl import logging

from metadial.io import atomic_write_json, read_json


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """orbax logs every save at INFO through absl; keep the launchers' progress log readable."""
    level = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(level)


class Checkpointer:
    """Saves and restores pytrees under ``directory/<step>``; orbax writes each checkpoint to a temporary
    folder and renames it when complete, so a crash never leaves a half-written checkpoint behind."""

    def __init__(self, directory: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.path.abspath(directory)
        with _quiet():
            self._manager = ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
            )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, tree: Any, info: dict[str, Any] | None = None) -> None:
        """Writes ``tree`` as the checkpoint of ``step`` and waits until it is on disk; ``info`` (JSON, e.g. the
        run's wall-clock so far) is kept beside the latest checkpoint, written after it."""
        with _quiet():
            self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
            self._manager.wait_until_finished()
        if info is not None:
            atomic_write_json(self._info_path, {"step": step, "info": info})

    @property
    def _info_path(self) -> str:
        return os.path.join(self.directory, "info.json")

    def info(self, step: int) -> dict[str, Any]:
        """The ``info`` saved with the checkpoint of ``step`` (empty if none was, or it belongs to another step:
        a crash between a checkpoint and its info leaves the previous one)."""
        if not os.path.exists(self._info_path):
            return {}
        saved = read_json(self._info_path)
        return dict(saved["info"]) if saved.get("step") == step else {}

    def restore(self, step: int, like: Any = None) -> Any:
        """The checkpoint of ``step``, with the structure and dtypes of ``like`` (without: as saved, containers
        as dicts and lists)."""
        with _quiet():
            if like is None:
                return self._manager.restore(step)
            return self._manager.restore(step, args=ocp.args.StandardRestore(like))

    def close(self) -> None:
        with _quiet():
            self._manager.close()
