"""A progress line for long commands (``etl-gate replay``, ``etl-gate gen``).

Writes ``label  1,234,567 events  412.3k events/s  45%  ETA 0:12`` to stderr,
at most ``1 / interval_s`` times a second, rewritten in place with ``\\r`` on a
terminal. Off a terminal it stays silent unless forced (then one line per
report), so logs, pipes and CI see nothing. The clock is injected for tests.

Callers report every few thousand items (``update(n)`` or ``track()``), never
per item: the hot loop pays one comparison per item at most, nothing at all
when the line is off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

EVERY = 4096  # items between two reports from track()


class Progress:
    """Done count, rate and ETA of one long job.

    ``total`` (optional) is what ``at`` counts toward: items by default, or
    another unit such as bytes of an input file when ``update`` is given
    ``at``, the absolute position in that unit.
    """

    def __init__(self, label: str, total: float | None = None, *, unit: str = "events",
                 stream: TextIO | None = None, force: bool = False, interval_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.enabled = self.tty or force
        self.interval_s = interval_s
        self.clock = clock
        self.done = 0
        self.at = 0.0
        self.started = clock()
        self._next = self.started + interval_s
        self._width = 0
        self._closed = False

    def update(self, n: int, at: float | None = None) -> None:
        """Add ``n`` items done; ``at``: position toward ``total`` if not the item count."""
        self.done += n
        self.at = float(self.done) if at is None else at
        if not self.enabled:
            return
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval_s
            self._write(self._line(now))

    def track(self, items: Iterable[T], every: int = EVERY,
              at: Callable[[], float] | None = None) -> Iterable[T]:
        """``items`` unchanged, reporting every ``every`` items (``at()`` gives the position)."""
        if not self.enabled:
            return items
        return self._track(items, every, at)

    def _track(self, items: Iterable[T], every: int, at: Callable[[], float] | None) -> Iterator[T]:
        n = 0
        for item in items:
            yield item
            n += 1
            if n == every:
                self.update(n, at() if at else None)
                n = 0
        if n:
            self.update(n, at() if at else None)

    def close(self) -> None:
        """The final line: count, time and mean rate (only where the line is on)."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        elapsed = max(self.clock() - self.started, 1e-9)
        self._write(f"{self.label}  {self.done:,} {self.unit} in {_duration(elapsed)}, "
                    f"{_si(self.done / elapsed)} {self.unit}/s")
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        parts = [self.label, f"{self.done:,} {self.unit}", f"{_si(self.done / elapsed)} {self.unit}/s"]
        if self.total:
            share = min(self.at / self.total, 1.0)
            parts.append(f"{share:.0%}")
            if 0 < share < 1:
                parts.append(f"ETA {_duration(elapsed * (1 - share) / share)}")
        return "  ".join(parts)

    def _write(self, line: str) -> None:
        if self.tty:
            # Pad over the rest of a longer previous line; stay on the same line.
            pad = max(self._width - len(line), 0)
            self._width = len(line)
            self.stream.write(f"\r{line}{' ' * pad}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60 and seconds < 10:
        return f"{seconds:.1f}s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
