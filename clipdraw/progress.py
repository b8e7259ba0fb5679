"""Progress bars that suit where they are read: redrawn live on a terminal, and at most every
``LOG_INTERVAL`` seconds when stderr is a file or a pipe, so that a log holds a few lines a
minute instead of every redraw."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0   # seconds between redraws when nobody watches a terminal


def stderr_is_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class LogBar(tqdm):
    """A bar for a log: a new postfix waits for the next timed redraw instead of forcing one."""

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = False) -> None:
        super().set_postfix_str(s, refresh=False)


def progress_bar(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, redrawn at most every ``LOG_INTERVAL`` seconds when stderr is
    not a terminal; ``disable=True`` still silences it."""
    if stderr_is_terminal():
        return tqdm(iterable, **kwargs)
    kwargs.update(mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, dynamic_ncols=False)
    return LogBar(iterable, **kwargs)
