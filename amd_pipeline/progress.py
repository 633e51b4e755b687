"""In-process progress listeners: lets the CLI show a run's progress while the step runs in-process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from amd_pipeline.loader import Progress

_listeners: list[Callable[[Progress], None]] = []


@contextlib.contextmanager
def listening(listener: Callable[[Progress], None]) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def publish(progress: Progress) -> None:
    for listener in list(_listeners):
        listener(progress)
