"""Reading a run's event log for timings: when an event happened, when the step took its last answer."""

from __future__ import annotations

import re

PROGRESS_LINE = re.compile(r"^\d+/\d+ windows, ")  # the amd_daily step's progress log


def event_time(logs, kind: str, step: str | None = None, last: bool = False) -> float | None:
    """The timestamp of the first (or ``last``) event of type ``kind`` (of ``step`` if given), else None."""
    for e in reversed(logs) if last else logs:
        d = e.dagster_event
        if d and d.event_type_value == kind and (step is None or d.step_key == step):
            return e.timestamp
    return None


def event_times(logs, kind: str, step: str | None = None) -> list[float]:
    """The timestamps of every event of type ``kind`` (of ``step`` if given), in order."""
    return [
        e.timestamp
        for e in logs
        if e.dagster_event
        and e.dagster_event.event_type_value == kind
        and (step is None or e.dagster_event.step_key == step)
    ]


def last_answer_taken(logs) -> float | None:
    """When the step took its last answer: its last progress line ("180/180 windows, ..."), logged then.

    Materialisations may come before it (a CLI run logs them during the load), so they cannot mark it.
    """
    stamps = [e.timestamp for e in logs if e.dagster_event is None and PROGRESS_LINE.match(e.user_message)]
    return stamps[-1] if stamps else None
