"""The one failure path: what users see when a command cannot go on.

``ClipdrawError`` is a problem with the user's input or environment, explained in one line
(exit code 2 in the CLI). ``describe_failure`` maps any other exception a command can end with
to one line and an exit code: a failed write (disk full, permission, read-only, file too
large) and running out of memory are exit 1 with the path or what to lower; anything else is
exit 1 as an unexpected error. ``CLIPDRAW_DEBUG=1`` makes the CLI show the traceback instead.

``note`` (a remark) and ``fail`` (the last line, then the exit) write what a command says on
stderr, so every such line reads ``clipdraw: ...`` and a failure is always one line.

Nothing here imports torch: the CLI's cheap checks run before torch is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Optional, Tuple

EXIT_FAILURE = 1       # the command was fine, the run failed (disk, memory, a bug)
EXIT_USAGE = 2         # bad input: fix the command or the files it names
EXIT_INTERRUPTED = 130
DEBUG_VARIABLE = "CLIPDRAW_DEBUG"
MEMORY_HINT = "lower --batch, --candidates, --cutn or --size, or add --low-memory"

# Messages torch's allocators give (CUDA, MPS, the CPU's DefaultCPUAllocator) without an
# exception type of their own on every supported torch.
OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM")
                         if hasattr(errno, name))
ERRNO_HINTS = {errno.EFBIG: "over the file-size limit: see ulimit -f", errno.ENOSPC: "the disk is full",
               **({errno.EDQUOT: "over the disk quota"} if hasattr(errno, "EDQUOT") else {})}
PATH_NAMES = ("path", "dest", "target", "tmp")   # the names clipdraw's writers give the file they write


class ClipdrawError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class InputError(ClipdrawError, ValueError):
    """A value of the wrong shape or type handed to clipdraw's Python API. Also a ``ValueError``,
    which such calls raised before."""


def debug_requested() -> bool:
    """``CLIPDRAW_DEBUG`` set to anything but empty or 0: show tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def one_line(text: object, limit: Optional[int] = None) -> str:
    """``text`` as a single line (of at most ``limit`` characters)."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[:limit - 3].rstrip() + "..."


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, else its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return one_line(lines[0], limit) if lines else type(error).__name__


def is_out_of_memory(error: BaseException) -> bool:
    """torch's (CUDA or not) out-of-memory errors, Python's MemoryError, ENOMEM, and the
    RuntimeErrors allocators raise with only their message to say so."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, OSError):
        return error.errno == errno.ENOMEM
    torch = sys.modules.get("torch")
    if torch is not None:
        kinds = tuple(kind for kind in (getattr(torch, "OutOfMemoryError", None),
                                        getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                      if isinstance(kind, type))
        if kinds and isinstance(error, kinds):
            return True
    return isinstance(error, RuntimeError) and any(words in str(error).lower() for words in OUT_OF_MEMORY_WORDS)


def path_of(error: OSError) -> Optional[str]:
    """The file an OSError is about: its own ``filename``, else the file the innermost of
    clipdraw's own frames was writing (a ``write`` or ``flush`` deep in PIL or imageio carries
    no name; the clipdraw function that called it holds it as ``path``, ``dest``, ...)."""
    if error.filename is not None:
        return os.fsdecode(error.filename) if isinstance(error.filename, (str, bytes, os.PathLike)) \
            else str(error.filename)
    return _path_in_traceback(error.__traceback__)


def _path_in_traceback(tb: Optional[TracebackType]) -> Optional[str]:
    package = str(Path(__file__).resolve().parent)
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):   # innermost first
        filename = frame.f_code.co_filename
        if not (filename.startswith(package + os.sep) and filename != __file__):
            continue
        for name in PATH_NAMES:
            value = frame.f_locals.get(name)
            if isinstance(value, (str, os.PathLike)):
                return os.fspath(value)
    return None


def describe_os_error(error: OSError) -> str:
    """'cannot write PATH: File too large (over the file-size limit: see ulimit -f)' and the like."""
    reason = error.strerror or first_line(error)
    hint = ERRNO_HINTS.get(error.errno)
    reason = f"{reason} ({hint})" if hint else reason
    path = path_of(error)
    if error.errno == errno.EPIPE:
        return f"output closed early ({reason})"
    verb = "cannot write" if error.errno in WRITE_ERRNOS else "file error on"
    return f"{verb} {path}: {reason}" if path else f"{verb} a file: {reason}"


def describe_failure(error: BaseException, memory_hint: str = MEMORY_HINT) -> Tuple[str, int]:
    """(one-line message, exit code) for an exception a command ended with.

    ``memory_hint`` says what to lower when the command ran out of memory; the CLI picks it by
    command (``clipdraw.cli``)."""
    if isinstance(error, ClipdrawError):
        return one_line(error), EXIT_USAGE
    if is_out_of_memory(error):
        return one_line(f"out of memory ({first_line(error)}): {memory_hint}"), EXIT_FAILURE
    if isinstance(error, OSError):
        return one_line(describe_os_error(error)), EXIT_FAILURE
    return (one_line(f"unexpected {type(error).__name__}: {first_line(error)} (run again with "
                     f"{DEBUG_VARIABLE}=1 for the traceback, and please report it)"), EXIT_FAILURE)


def release(error: BaseException) -> None:
    """Free, now and quietly, what the frames of ``error``'s traceback hold. A writer abandoned
    mid-file (imageio's GIF writer, say) retries its write when collected and would print that
    second failure's traceback at exit, after the one line that already gave the cause."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            traceback.clear_frames(error.__traceback__)   # skips frames still running (main's own)
            error = error.__cause__ or error.__context__
        gc.collect()
    finally:
        sys.unraisablehook = hook


# --------------------------------------------------------------------------- reporting


def note(message: str) -> None:
    """``clipdraw: message`` on stderr: a remark that does not stop the command."""
    print(f"clipdraw: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE, error: Optional[BaseException] = None) -> NoReturn:
    """End the process with ``clipdraw: error: message`` on stderr and ``code``. With the
    ``error`` that caused it, what its traceback holds is freed first (``release``), and a
    closed stdout (EPIPE) is pointed at /dev/null so the exit's flush cannot fail again."""
    print(f"clipdraw: error: {message}", file=sys.stderr, flush=True)
    if error is not None:
        release(error)
    if isinstance(error, OSError) and error.errno == errno.EPIPE:   # stdout's reader is gone: nothing to flush
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def fail_with(error: BaseException, memory_hint: str = MEMORY_HINT) -> NoReturn:
    """``fail`` with the line and exit code ``describe_failure`` gives ``error``."""
    message, code = describe_failure(error, memory_hint)
    fail(message, code, error)


def exit_interrupted(message: str = "interrupted") -> NoReturn:
    """Ctrl-C: say what was kept (``message``) and exit 130, as a shell expects."""
    note(message)
    sys.exit(EXIT_INTERRUPTED)
