"""The generators an experiment can run, by name, behind one call: ``run(prompt, seed, on_frame)``.

- ``optimize``: the pseudo-DALL-E (``clipdraw.generate``), guided by a CLIP;
- ``transformer``: the autoregressive paradigm in miniature (the toy transformer, or one
  trained by ``clipdraw toy train --coco``);
- ``dallemini``: dalle-mini through min-dalle (``clipdraw.dallemini``), when installed.

Models are loaded on first use, once, and shared: an experiment whose runs are all finished
loads no generator at all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Optional

from ..config import TOY_DEFAULTS, GenerationConfig, toy_config
from ..errors import ClipdrawError
from ..optimize import Frame, GenerationResult

ENGINE_NAMES = ("optimize", "transformer", "dallemini")
FrameHook = Optional[Callable[[Frame], None]]


# The real world's experiment defaults (probe passes its own iters, 2000); the toy world's
# come from clipdraw.config.TOY_DEFAULTS.
REAL_DEFAULTS = dict(iters=1000, save_every=50, cutn=32, lr=0.1)


@dataclass
class EngineSettings:
    """What every generation of an experiment shares; recorded in experiment.json (``record``),
    and an existing experiment folder is only resumed with the same settings.

    iters, save_every, cutn and lr are None where the user gave none: the world's default then
    applies (REAL_DEFAULTS, or the toy world's TOY_DEFAULTS through ``toy_config``)."""

    model: str = "openai"             # openai: real CLIP + dVAE; toy: the shipped toy world
    clip_model: str = "ViT-B/32"      # the guiding CLIP (optimize)
    decoder: str = "openai"
    transformer: Optional[str] = None  # folder of transformer.safetensors (default: the toy one)
    iters: Optional[int] = None       # default 1000, toy: TOY_DEFAULTS
    save_every: Optional[int] = None  # default 50, toy: TOY_DEFAULTS
    cutn: Optional[int] = None        # default 32, toy: TOY_DEFAULTS
    size: Optional[int] = None        # default 256, toy 64
    lr: Optional[float] = None        # default 0.1 (GenerationConfig's), toy: TOY_DEFAULTS or the same
    mega: bool = False                # dallemini: dalle-mega

    def given(self) -> dict:
        """The generation settings the user gave (not None)."""
        return {k: v for k, v in (("iters", self.iters), ("save_every", self.save_every), ("cutn", self.cutn),
                                  ("size", self.size), ("lr", self.lr)) if v is not None}

    def generation_config(self, seed: int) -> GenerationConfig:
        """The optimizer's settings: in the toy world ``toy_config`` (its defaults, then only what
        the user gave); else GenerationConfig with REAL_DEFAULTS where the user gave nothing."""
        if self.model == "toy":
            return toy_config(seed=seed, **self.given())
        return GenerationConfig(**{**REAL_DEFAULTS, "size": 256, **self.given(), "seed": seed})

    def record(self) -> dict:
        """What experiment.json keeps and a resumed experiment must match: the effective values
        (so ``--iters 300`` resumes a toy experiment run at the toy default of 300), size as given
        (as before). The real world's record has the same keys and values as before, so its
        older experiments resume; the toy world's adds the other toy defaults (relaxation, tv_weight,
        ...), since a change of them changes the images."""
        config = self.generation_config(0)
        record = asdict(self)
        record.update(iters=config.iters, save_every=config.save_every, cutn=config.cutn, lr=config.lr)
        if self.model == "toy":
            record.update({k: getattr(config, k) for k in TOY_DEFAULTS if k not in record})
        return record

    @property
    def guide_name(self) -> str:
        return "toy" if self.model == "toy" else self.clip_model

    def check(self, engines, offline: bool = False) -> None:
        """Cheap refusals before anything is loaded or written: unknown names, missing files."""
        self.generation_config(0)   # iters, size, ... in range
        for name in engines:
            if name not in ENGINE_NAMES:
                raise ClipdrawError(f"unknown engine {name!r}: expected some of {', '.join(ENGINE_NAMES)}")
        if self.model != "toy" and {"optimize", "transformer"} & set(engines):
            from .. import weights  # noqa: PLC0415

            for name, kind in ((self.clip_model, "clip"), (self.decoder, "dvae")):
                source = weights.locate(name, kind)
                if offline and isinstance(source, weights.WeightFile) and not source.path().is_file():
                    weights.fetch(source, offline=True)   # raises: which URL to fetch, where to put it
        if "transformer" in engines and self.model != "toy" and self.transformer is None:
            raise ClipdrawError("engine transformer needs --model toy, or --transformer DIR from "
                                "'clipdraw toy train --coco'")
        if self.transformer is not None and not (Path(self.transformer) / "transformer.safetensors").is_file():
            raise ClipdrawError(f"no transformer.safetensors in {self.transformer}")
        if "dallemini" in engines:
            if self.model == "toy":
                raise ClipdrawError("engine dallemini runs min-dalle's own models: leave out --model toy")
            dallemini_module()


def dallemini_module():
    """clipdraw.dallemini, or one line saying why the engine cannot run here."""
    if importlib.util.find_spec("clipdraw.dallemini") is None:
        raise ClipdrawError("engine dallemini is not available in this clipdraw (no clipdraw.dallemini module)")
    from .. import dallemini  # noqa: PLC0415

    dallemini.import_min_dalle()   # not installed: its own one-line message with the install command
    return dallemini


class Engine:
    """One named generator; ``guide`` is the CLIP it optimizes against (None: not CLIP-guided)."""

    def __init__(self, name: str, run: Callable[[str, int, FrameHook, bool], GenerationResult],
                 settings: Callable[[int], dict], info: dict, device: str, guide: Optional[dict] = None):
        self.name, self._run, self._settings = name, run, settings
        self.info, self.device, self.guide = info, device, guide

    def run(self, prompt: str, seed: int, on_frame: FrameHook = None, progress: bool = True) -> GenerationResult:
        return self._run(prompt, seed, on_frame, progress)

    def settings(self, seed: int) -> dict:
        return self._settings(seed)


class EngineLoader:
    """Builds engines on first request and keeps the models they share."""

    def __init__(self, settings: EngineSettings, device: str = "auto", offline: bool = False, keep_frames: bool = True):
        self.settings, self.device, self.offline, self.keep_frames = settings, device, offline, keep_frames
        self._models = None
        self._engines: Dict[str, Engine] = {}

    def models(self):
        if self._models is None:
            from ..device import resolve_device  # noqa: PLC0415

            target = resolve_device(self.device)
            if self.settings.model == "toy":
                from ..toy.engine import load_toy_models  # noqa: PLC0415

                self._models = load_toy_models(target)
            else:
                from ..models import load_models  # noqa: PLC0415

                self._models = load_models(self.settings.clip_model, self.settings.decoder, device=target,
                                           offline=self.offline)
        return self._models

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            build = {"optimize": self._optimize, "transformer": self._transformer, "dallemini": self._dallemini}
            if name not in build:
                raise ClipdrawError(f"unknown engine {name!r}: expected some of {', '.join(ENGINE_NAMES)}")
            self._engines[name] = build[name]()
        return self._engines[name]

    def _optimize(self) -> Engine:
        from ..optimize import generate  # noqa: PLC0415

        models = self.models()
        base = self.settings.generation_config(0)

        def run(prompt, seed, on_frame, progress):
            return generate(models, prompt, replace(base, seed=seed), on_frame=on_frame, progress=progress)

        return Engine("optimize", run, lambda seed: asdict(replace(base, seed=seed)),
                      {"models": models.info, "device": str(models.device)}, str(models.device),
                      guide=models.info["clip"])

    def _transformer(self) -> Engine:
        from ..toy.engine import SamplingConfig, TransformerEngine  # noqa: PLC0415

        models = self.models()
        root = Path(self.settings.transformer) if self.settings.transformer else None
        sampler = TransformerEngine(models, root)

        def run(prompt, seed, on_frame, progress):
            return sampler.generate(prompt, SamplingConfig(seed=seed), on_frame=on_frame, progress=progress)

        info = {**models.info, "transformer": str(root) if root else "toy"}
        return Engine("transformer", run, lambda seed: asdict(SamplingConfig(seed=seed)),
                      {"models": info, "device": str(models.device)}, str(models.device))

    def _dallemini(self) -> Engine:
        from ..device import resolve_device  # noqa: PLC0415

        dallemini = dallemini_module()
        target = resolve_device(self.device)
        template = dallemini.DalleMiniConfig(seed=0, mega=self.settings.mega, progressive=self.keep_frames)
        engine = dallemini.DalleMiniEngine.load(template, device=target, clip_model=None, offline=self.offline)

        def run(prompt, seed, on_frame, progress):
            return engine.generate(prompt, replace(template, seed=seed), on_frame=on_frame, progress=progress)

        return Engine("dallemini", run, lambda seed: asdict(replace(template, seed=seed)),
                      {"models": engine.info, "device": str(engine.device)}, str(engine.device))
