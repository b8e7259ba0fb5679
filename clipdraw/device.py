"""Pick the compute device: CUDA when present, else CPU."""

from __future__ import annotations

import torch

from .errors import ClipdrawError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


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
