"""In-process progress listeners: lets the CLI show a run's progress while the step runs in-process."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from amd_pipeline.core.loader import Progress

_listeners: list[Callable[[Progress], None]] = []


@contextlib.contextmanager
def listening(listener: Callable[[Progress], None]) -> Iterator[None]:
    """Call ``listener`` with each progress this process publishes while the block runs."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def publish(progress: Progress) -> None:
    """Hand ``progress`` to every listener registered with :func:`listening`."""
    for listener in list(_listeners):
        listener(progress)


class ProgressPrinter:
    """A `rich` progress bar on a terminal; plain lines (every 5 s and at the end) otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._bar = None
        self._task = None

    def __call__(self, p) -> None:
        """Show ``p``: redraw the bar on a terminal, else print a line every 5 s and when finished."""
        finished = p.windows_done == p.windows_total
        if self.tty:
            self._draw(p, finished)
            return
        now = time.monotonic()
        if finished or now - self._last >= 5.0:
            self._last = now
            rate = p.windows_done / p.elapsed if p.elapsed > 0 else 0.0
            eta = (p.windows_total - p.windows_done) / rate if rate else 0.0
            print(
                f"progress: {p.windows_done}/{p.windows_total} windows, {p.calls} calls, {p.retries} retries, "
                f"ETA {eta:.0f} s",
                file=self.stream,
                flush=True,
            )

    def _draw(self, p, finished: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(
                TextColumn("windows"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[calls]} calls, {task.fields[retries]} retries"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("load", total=p.windows_total, calls=0, retries=0)
            self._bar.start()
        self._bar.update(self._task, completed=p.windows_done, total=p.windows_total, calls=p.calls, retries=p.retries)
        if finished:
            self._bar.stop()
            self._bar = None
