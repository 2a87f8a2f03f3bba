"""What a backfill reports: progress as it goes, a summary at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

# (position reached, range start, range end): the CLI turns it into a progress bar.
ProgressFn = Callable[[datetime, datetime, datetime], None]


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch with no data where the source's granularity promised some."""

    after: datetime
    before: datetime


@dataclass
class BackfillReport:
    """The summary of one backfill run (a resumed run counts only its own pages)."""

    source: str
    subject: str
    resumed: bool = False
    pages: int = 0
    new_rows: int = 0
    gaps: list[Gap] = field(default_factory=list)
    completed: bool = False


def range_key(start: datetime, end: datetime | None) -> str:
    """The checkpoint key of a requested range; an open end stays open across restarts."""
    end_text = end.astimezone(UTC).isoformat() if end is not None else "open"
    return f"{start.astimezone(UTC).isoformat()}/{end_text}"


def ignore_progress(_reached: datetime, _start: datetime, _end: datetime) -> None:
    """A progress callback that shows nothing."""
