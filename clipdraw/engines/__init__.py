"""Every generator behind one small interface (``Engine``), by name.

- ``optimize``: the pseudo-DALL-E, CLIP-guided optimization of dVAE latents;
- ``transformer``: the autoregressive paradigm in miniature (the toy transformer, or one
  trained by ``clipdraw toy train --coco``);
- ``dallemini``: dalle-mini or dalle-mega through min-dalle.

    source = ModelSource(model="toy")
    engine = load_engine("optimize", source, iters=200)
    result = engine.generate("a red circle", seed=0)

Engines are imported on first use: naming one does not import torch or min-dalle.
"""

from __future__ import annotations

import importlib
from typing import Type

from ..config import ENGINE_NAMES, ENGINE_SETTINGS, engine_options, engine_settings
from ..errors import ClipdrawError
from .base import Engine, FrameHook, ModelSource

_MODULES = {"optimize": ("optimize", "OptimizeEngine"), "transformer": ("transformer", "TransformerEngine"),
            "dallemini": ("dallemini", "DalleMiniEngine")}


def engine_class(name: str) -> Type[Engine]:
    """The engine called ``name``, imported now."""
    if name not in _MODULES:
        raise ClipdrawError(f"unknown engine {name!r}: expected one of {', '.join(ENGINE_NAMES)}")
    module, attribute = _MODULES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


def load_engine(name: str, source: ModelSource, seed: int = 0, **settings) -> Engine:
    """Build engine ``name`` in ``source``'s world: its settings from its defaults and ``settings``,
    checked, then its models loaded."""
    cls = engine_class(name)
    config = engine_settings(name, source.model, seed=seed, **settings)
    cls.check(config, source)
    return cls.load(config, source)


__all__ = ["ENGINE_NAMES", "ENGINE_SETTINGS", "Engine", "FrameHook", "ModelSource", "engine_class", "engine_options",
           "engine_settings", "load_engine"]
