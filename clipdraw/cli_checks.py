"""Checks of the command line that the generating commands (cli.py) and the evaluation commands
(evaluate/commands.py) share: both import them from here, so neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import click
from click.core import ParameterSource

from .config import ENGINE_NAMES, REAL_MODEL_OPTIONS, engine_options
from .errors import ClipdrawError

DEFAULT_SOURCES = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)   # an option the user did not give


class FolderPath(click.Path):
    """An --out folder, as a Path; an empty name is refused (click would read it as ".", the
    current folder, which the user did not name)."""

    def __init__(self):
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name the folder to write into", param, ctx)
        return super().convert(value, param, ctx)


def refuse_real_models_for_toy(ctx: click.Context, model: str) -> None:
    """With ``--model toy``, one line for a real model's option given (--clip-model, --decoder,
    --encoder): the toy world draws with its own CLIP and dVAE, and ignoring them would mislead.
    generate, edit, compare, probe and batch all check here."""
    for name in REAL_MODEL_OPTIONS if model == "toy" else ():
        if name in ctx.params and ctx.get_parameter_source(name) not in DEFAULT_SOURCES:
            raise ClipdrawError(f"--{name.replace('_', '-')} names a real model; --model toy draws with the toy "
                                "world's own CLIP and dVAE")


def refuse_other_engines_options(ctx: click.Context, engines: Sequence[str], names: Iterable[str],
                                 settings: Mapping[str, str] = {}) -> None:   # noqa: B006 (read only)
    """One line naming the first option given that none of ``engines`` uses while another engine
    does (``clipdraw.config.engine_options``): dropped in silence, it would mislead. ``settings``
    maps a parameter to the setting it fills where their names differ."""
    used = {option for engine in engines if engine in ENGINE_NAMES   # an unknown name is refused elsewhere
            for option in engine_options(engine)}
    for name in names:
        setting = settings.get(name, name)
        takers = [e for e in ENGINE_NAMES if setting in engine_options(e)]
        if takers and setting not in used and ctx.get_parameter_source(name) not in DEFAULT_SOURCES:
            flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
            raise ClipdrawError(f"{flag} is not used by --engine {', '.join(engines)}: it is for --engine "
                                f"{' or '.join(takers)}")
