"""The generators an experiment runs, through ``clipdraw.engines``: what the experiment's
settings are (recorded in experiment.json, and matched when it resumes), and a loader that
builds each engine on first use, once, so that an experiment whose runs are all finished
loads no generator at all."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..config import (DEFAULT_CLIP, DEFAULT_DECODER, ENGINE_NAMES, TOY_BLANK, TOY_DEFAULTS, GenerationConfig,
                      clip_model_names, engine_settings)
from ..errors import ClipdrawError


@dataclass
class EngineSettings:
    """What every generation of an experiment shares; recorded in experiment.json (``record``),
    and an existing experiment folder is only resumed with the same settings.

    iters, save_every, cutn, size and lr are None where the user gave none: the world's
    defaults then apply (``clipdraw.config``: GenerationConfig's, or the toy world's)."""

    model: str = "openai"             # openai: real CLIP + dVAE; toy: the shipped toy world
    clip_model: str = DEFAULT_CLIP    # the guiding CLIP (optimize)
    decoder: str = DEFAULT_DECODER
    transformer: Optional[str] = None  # folder of transformer.safetensors (default: the toy one)
    iters: Optional[int] = None
    save_every: Optional[int] = None
    cutn: Optional[int] = None
    size: Optional[int] = None
    lr: Optional[float] = None
    mega: bool = False                # dallemini: dalle-mega

    def given(self) -> dict:
        """The generation settings the user gave (not None)."""
        return {k: v for k, v in (("iters", self.iters), ("save_every", self.save_every), ("cutn", self.cutn),
                                  ("size", self.size), ("lr", self.lr)) if v is not None}

    def generation_config(self, seed: int) -> GenerationConfig:
        """The optimizer's settings: the world's defaults, then what the user gave."""
        return engine_settings("optimize", self.model, seed=seed, **self.given())

    def engine_settings(self, name: str, seed: int = 0, keep_frames: bool = True) -> Any:
        """Engine ``name``'s settings for a run at ``seed``."""
        if name == "optimize":
            return self.generation_config(seed)
        if name == "dallemini":
            return engine_settings(name, self.model, seed=seed, mega=self.mega, progressive=keep_frames)
        return engine_settings(name, self.model, seed=seed)

    def source(self, device: str = "auto", offline: bool = False):
        """Where the engines' models come from (``clipdraw.engines.ModelSource``); dalle-mini loads
        no CLIP of its own here: the experiment's judge scores every image."""
        from ..engines import ModelSource  # noqa: PLC0415

        return ModelSource(model=self.model, clip_model=self.clip_model, decoder=self.decoder,
                           transformer=self.transformer, device=device, offline=offline, score_frames=False)

    def record(self) -> dict:
        """What experiment.json keeps and a resumed experiment must match: the effective values
        (so ``--iters 300`` resumes a toy experiment run at the toy default of 300), size as given.
        The toy world's record adds the other toy defaults (relaxation, tv_weight, ...), since a
        change of them changes the images."""
        config = self.generation_config(0)
        record = asdict(self)
        record.update(iters=config.iters, save_every=config.save_every, cutn=config.cutn, lr=config.lr)
        if self.model == "toy":
            record.update({k: getattr(config, k) for k in TOY_DEFAULTS if k not in record})
        return record

    def used(self, engines: Sequence[str]) -> Dict[str, Any]:
        """What the reports show: the settings ``engines`` ran with, at their effective values (the
        world's defaults filled in), and none that they did not read. ``record`` is what resuming
        matches, unchanged; each run's run.json holds every setting of its engine.

        The optimizer's: iters, save_every, cutn, size and lr, and the others where they are not
        GenerationConfig's defaults (the toy world's relaxation, tv_weight, ...)."""
        shown: Dict[str, Any] = {"model": self.model}
        if self.model != "toy" and {"optimize", "transformer"} & set(engines):
            shown.update(clip_model=self.clip_model, decoder=self.decoder)
        for name in engines:
            values = asdict(self.engine_settings(name))
            values.pop("seed")
            if name == "optimize":
                defaults = asdict(GenerationConfig())
                values = {k: v for k, v in values.items()
                          if k in ("iters", "save_every", "cutn", "size", "lr") or v != defaults[k]}
                if values.get("init_image") == TOY_BLANK:   # not this machine's path in a shared report
                    values["init_image"] = "the blank canvas (clipdraw/toy/blank.png)"
            elif name == "transformer":
                values = {"weights": self.transformer or "toy" + _toy_weights_source(), **values,
                          "save_every": values["save_every"] or "every row of tokens"}
            else:
                values.pop("progressive")   # follows whether the experiment keeps frames
            shown[name] = values
        return shown

    @property
    def guide_name(self) -> str:
        return "toy" + _toy_weights_source() if self.model == "toy" else self.clip_model

    def check(self, engines: Sequence[str], offline: bool = False) -> None:
        """Cheap refusals before anything is loaded or written: unknown names, missing files."""
        self.generation_config(0)   # iters, size, ... in range
        for name in engines:
            if name not in ENGINE_NAMES:
                raise ClipdrawError(f"unknown engine {name!r}: expected some of {', '.join(ENGINE_NAMES)}")
        if self.model != "toy" and {"optimize", "transformer"} & set(engines):
            from .. import weights  # noqa: PLC0415

            named = {f"{kind} {name}": weights.locate(name, kind)
                     for name, kind in [*((n, "clip") for n in clip_model_names(self.clip_model)),
                                        (self.decoder, "dvae")]}
            if offline:   # every missing file in one line: which URL to fetch, where to put it
                weights.fetch_all({kind: source for kind, source in named.items()
                                   if isinstance(source, weights.WeightFile) and not source.path().is_file()},
                                  offline=True)
        from ..engines import engine_class  # noqa: PLC0415

        source = self.source(offline=offline)
        for name in engines:
            engine_class(name).check(self.engine_settings(name), source)
        if self.transformer is not None and not (Path(self.transformer) / "transformer.safetensors").is_file():
            raise ClipdrawError(f"no transformer.safetensors in {self.transformer}")


def _toy_weights_source() -> str:
    from ..toy.models import weights_source  # noqa: PLC0415

    return weights_source()


class EngineLoader:
    """Builds engines on first request (``clipdraw.engines``) and keeps the models they share."""

    def __init__(self, settings: EngineSettings, device: str = "auto", offline: bool = False, keep_frames: bool = True):
        self.settings, self.keep_frames = settings, keep_frames
        self.source = settings.source(device, offline)
        self._engines: Dict[str, Any] = {}

    def get(self, name: str):
        """Engine ``name`` (``clipdraw.engines.Engine``), loaded once."""
        if name not in self._engines:
            from ..engines import engine_class  # noqa: PLC0415

            cls = engine_class(name)
            self._engines[name] = cls.load(self.settings.engine_settings(name, 0, self.keep_frames), self.source)
        return self._engines[name]
