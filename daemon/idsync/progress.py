"""Main-loop progress from inside long phases.

A leader's lease is renewed only while its main loop reports progress (ha/loop.py: a loop that
makes none for `ha.stall_timeout_seconds` resigns when a healthy standby exists). Phases report
between themselves; on a large directory one phase — a full source import, a target import of a
million objects, the evaluation of every source object — lasts minutes, so the page loops inside
them call `beat()` too: a page committed is progress, a hung LDAP read or SQL statement is not.

The reporter is a context variable set for one cycle (`reporting`); `asyncio.to_thread` copies it
into the worker thread, so the page loops need no parameter, and a phase running outside a node's
cycle (a test, a command) reports to nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_reporter: ContextVar[Callable[[], None] | None] = ContextVar("idsync_progress", default=None)


def beat() -> None:
    """One unit of work done (a page read and committed, a page of objects evaluated)."""
    report = _reporter.get()
    if report is not None:
        report()


@contextmanager
def reporting(report: Callable[[], None]) -> Iterator[None]:
    """Within this block (and the threads `asyncio.to_thread` starts from it), `beat()` calls
    `report`."""
    token = _reporter.set(report)
    try:
        yield
    finally:
        _reporter.reset(token)
