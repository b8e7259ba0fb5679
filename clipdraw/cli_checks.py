"""Checks of the command line that the generating commands (cli.py) and the evaluation commands
(evaluate/commands.py) share: both import them from here, so neither imports the other."""

from __future__ import annotations

import click
from click.core import ParameterSource

from .config import REAL_MODEL_OPTIONS
from .errors import ClipdrawError

DEFAULT_SOURCES = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)   # an option the user did not give


def refuse_real_models_for_toy(ctx: click.Context, model: str) -> None:
    """With ``--model toy``, one line for a real model's option given (--clip-model, --decoder,
    --encoder): the toy world draws with its own CLIP and dVAE, and ignoring them would mislead.
    generate, edit, compare, probe and batch all check here."""
    for name in REAL_MODEL_OPTIONS if model == "toy" else ():
        if name in ctx.params and ctx.get_parameter_source(name) not in DEFAULT_SOURCES:
            raise ClipdrawError(f"--{name.replace('_', '-')} names a real model; --model toy draws with the toy "
                                "world's own CLIP and dVAE")
