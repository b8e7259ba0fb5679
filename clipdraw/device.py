"""Pick the compute device: CUDA when present, else CPU."""

from __future__ import annotations

import os
from typing import Optional

import torch

from .errors import ClipdrawError


def resolve_device(choice: str = "auto") -> torch.device:
    """Turn 'auto' | 'cpu' | 'cuda' (or 'cuda:N') into a device, refusing CUDA where there is none."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ClipdrawError("--device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ClipdrawError(f"--device {choice}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise ClipdrawError(f"unknown device {choice!r}: expected one of auto, cpu, cuda")


PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def resolve_precision(choice: Optional[str] = "auto") -> Optional[torch.dtype]:
    """'auto' -> None (half precision on CUDA, float32 elsewhere: the device decides); a dtype's
    name -> that dtype on any device, so a CPU can run, slowly, what a GPU runs."""
    choice = (choice or "auto").strip().lower()
    if choice not in PRECISIONS:
        raise ClipdrawError(f"unknown precision {choice!r}: expected one of {', '.join(PRECISIONS)}")
    return None if choice == "auto" else getattr(torch, choice)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Keep freed memory in the process instead of handing it back to the OS (Linux, glibc).

    Why: every optimization step frees and re-allocates the same tensors, tens to hundreds of MB
    each. glibc serves blocks over 32 MB with fresh ``mmap`` pages and unmaps them on free, so
    each step page-faults its largest tensors in again. Served from the heap and never trimmed,
    they are reused. Measured on a 2-core CPU at 256 px (benchmarks/step_benchmark.py): a step
    in 0.79x the time at 8 cutouts, 0.95x at 32, a batch of 4 in 0.74x and 0.63x; the peak at
    most 0.2 GiB higher for one image. Process-wide and not undone: the command line calls it
    on CPU (not with ``--low-memory``); a notebook may too.
    Returns whether it took effect (False off glibc).
    """
    import ctypes  # noqa: PLC0415
    import ctypes.util  # noqa: PLC0415

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    no_mmap = mallopt(_M_MMAP_MAX, 0)                 # large blocks from the heap, not fresh mappings
    no_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)   # and never returned to the OS while the process runs
    return bool(no_mmap and no_trim)


def total_memory(device: torch.device) -> Optional[int]:
    """Bytes of memory ``device`` has in all (a GPU's own, or the machine's RAM for the CPU); None
    where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):   # no sysconf (Windows), or no such name
            return None
    return None
