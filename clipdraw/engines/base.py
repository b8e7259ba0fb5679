"""The one interface every generator implements, and where the models they share come from.

An engine is built from its own settings dataclass and a ``ModelSource`` (which world, which
weights, which device), then draws: ``generate(prompt, seed, on_frame) -> Result``. The CLI,
``probe``, ``compare`` and notebooks all go through it, so an engine added here is usable by all.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from ..errors import ClipdrawError
from ..prompts import parse_prompts
from ..results import Frame, Result
from ..config import DEFAULT_CLIP, DEFAULT_DECODER, DEFAULT_ENCODER

FrameHook = Optional[Callable[[Frame], None]]


@dataclass
class ModelSource:
    """Which models the engines load, and where: one per command, shared by its engines.

    The optimizer and the transformer share CLIP and the dVAE decoder (``models()``, loaded
    once); dalle-mini brings its own and uses CLIP to score what it draws."""

    model: str = "openai"                 # openai: the real CLIP and dVAE; toy: the shipped toy world
    clip_model: str = DEFAULT_CLIP        # the guiding CLIP (a name or a checkpoint path)
    decoder: str = DEFAULT_DECODER        # the dVAE decoder (a name or a decoder.pkl path)
    encoder: str = DEFAULT_ENCODER        # the dVAE encoder, loaded only for init images and edits
    transformer: Optional[str] = None     # folder of transformer.safetensors (default: the toy one)
    judge_model: Optional[str] = None     # the optimizer's frame judge; None: toy-judge in the toy world, else none
    dtype: str = "auto"                   # precision of the decoder and CLIP's autocast (clipdraw.device.PRECISIONS)
    device: str = "auto"
    offline: bool = False
    score_frames: bool = True             # dalle-mini: load CLIP to score its images (experiments judge apart)
    _models: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.model not in ("openai", "toy"):
            raise ClipdrawError(f"unknown model {self.model!r}: expected openai or toy")

    @property
    def judge(self) -> str:
        """The judge CLIP's name, with the world's default filled in."""
        return self.judge_model or ("toy-judge" if self.model == "toy" else "none")

    def target(self):
        from ..device import resolve_device  # noqa: PLC0415

        return resolve_device(self.device)

    def models(self, judge: bool = False, encoder: bool = False):
        """CLIP and the dVAE decoder (``clipdraw.Models``), loaded on first use; with ``judge``,
        also the judge CLIP when there is one; with ``encoder``, the dVAE encoder."""
        if self._models is None:
            if self.model == "toy":
                from ..toy.world import load_toy_models  # noqa: PLC0415

                self._models = load_toy_models(self.target(), judge=False, precision=self.dtype, encoder=False)
            else:
                from ..models import load_models  # noqa: PLC0415

                self._models = load_models(self.clip_model, self.decoder, device=self.target(),
                                           offline=self.offline, precision=self.dtype)
        models = self._models
        if judge and self.judge != "none" and models.judge is None:
            if self.judge == "toy-judge":
                from ..toy.world import load_toy_judge  # noqa: PLC0415

                models.judge, models.info["judge"] = load_toy_judge(models.device)
            else:
                from ..models import load_clip  # noqa: PLC0415

                models.judge, models.info["judge"] = load_clip(self.judge, device=models.device, offline=self.offline)
        if encoder and models.encoder is None:
            if self.model == "toy":
                from ..toy.world import load_toy_encoder  # noqa: PLC0415

                models.encoder, models.info["encoder"] = load_toy_encoder(models.device)
            else:
                from ..models import load_encoder  # noqa: PLC0415

                models.encoder, models.info["encoder"] = load_encoder(self.encoder, models.device, self.offline)
        return models


class Engine(abc.ABC):
    """A generator. Subclasses name their settings dataclass and the command-line options they
    take; ``clipdraw generate`` refuses the options of other engines (``clipdraw.engines.options``)."""

    name: ClassVar[str]
    settings_class: ClassVar[type]
    options: ClassVar[Tuple[str, ...]]   # the command-line options it takes besides everyone's
    step_unit: ClassVar[str] = "it"      # what progress counts: optimizer steps, or image tokens

    settings: Any

    @classmethod
    def check(cls, settings: Any, source: ModelSource) -> None:
        """Cheap refusals before anything is loaded or written (one ClipdrawError line)."""

    @classmethod
    def check_prompt(cls, prompt: str, settings: Any = None) -> None:
        """Refuse a prompt this engine cannot draw with ``settings`` (one ClipdrawError line), before loading."""
        parse_prompts(prompt)
        if "^" in prompt:
            raise ClipdrawError(f"prompt schedules ('^') are for --engine optimize; --engine {cls.name} draws one prompt")

    @classmethod
    @abc.abstractmethod
    def load(cls, settings: Any, source: ModelSource) -> "Engine":
        """Load what the engine needs (weights are fetched here, not before)."""

    @abc.abstractmethod
    def generate(self, prompt: str, seed: int, on_frame: FrameHook = None, progress: bool = True) -> Result:
        """Draw ``prompt`` at ``seed``; ``on_frame`` gets each frame as it is made."""

    @abc.abstractmethod
    def describe(self) -> Dict[str, Any]:
        """The models and device, as run.json records them."""

    def settings_at(self, seed: int) -> Any:
        """This engine's settings for one run at ``seed``."""
        return replace(self.settings, seed=seed)

    def summary_line(self, result: Result) -> str:
        """What stdout says after final.png's path: which frame it is and its numbers, each named
        for what it measures."""
        chosen = result.chosen_frame
        return (f"{self.step_unit} {chosen.iteration} of {result.iterations_done}; guide CLIP similarity of the "
                f"whole image {chosen.similarity:.4f}; {result.seconds_per_iteration:.3f} s/{self.step_unit}")


def settings_fields(settings_class: type) -> Tuple[str, ...]:
    return tuple(f.name for f in fields(settings_class))
