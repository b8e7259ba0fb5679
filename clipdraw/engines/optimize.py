"""The pseudo-DALL-E as an engine: CLIP-guided optimization of dVAE latents (``clipdraw.optimize``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..config import GenerationConfig, engine_options
from ..errors import ClipdrawError
from ..optimize import GenerationResult, generate, generate_batch, prompt_schedule
from ..prompts import parse_image_prompt
from .base import Engine, FrameHook, ModelSource


class OptimizeEngine(Engine):
    """Prompt -> text embedding -> latents -> decoder -> image -> cutouts -> CLIP -> loss -> step."""

    name = "optimize"
    settings_class = GenerationConfig
    options = engine_options(name)

    def __init__(self, models, settings: GenerationConfig):
        self.models, self.settings = models, settings

    @classmethod
    def check(cls, settings: GenerationConfig, source: ModelSource) -> None:
        if source.judge == "toy-judge" and source.model != "toy":
            raise ClipdrawError("--judge-model toy-judge judges the toy world: add --model toy, or name a real CLIP")
        if settings.patience and source.judge == "none":
            raise ClipdrawError("--patience stops when the judge's score stops rising: it needs --judge-model")
        cls.check_inputs(settings)

    @classmethod
    def check_prompt(cls, prompt: str, settings: Optional[GenerationConfig] = None) -> None:
        prompt_schedule(prompt, settings)

    @classmethod
    def check_inputs(cls, settings: GenerationConfig) -> None:
        """The images the run reads, read once now: a bad file stops it before anything loads."""
        from ..io import load_image  # noqa: PLC0415

        if settings.init_image:
            load_image(settings.init_image, "init image")
        for spec in settings.image_prompts:
            load_image(parse_image_prompt(spec).path, "image prompt")

    @classmethod
    def load(cls, settings: GenerationConfig, source: ModelSource) -> "OptimizeEngine":
        return cls(source.models(judge=True, encoder=bool(settings.init_image)), settings)

    def generate(self, prompt: str, seed: int, on_frame: FrameHook = None, progress: bool = True) -> GenerationResult:
        return generate(self.models, prompt, self.settings_at(seed), on_frame=on_frame, progress=progress)

    def generate_batch(self, prompt: str, seed: int, on_frame=None, progress: bool = True) -> List[GenerationResult]:
        """``settings.batch`` images at once, seeds seed, seed + 1, ... (``clipdraw.optimize.generate_batch``)."""
        return generate_batch(self.models, prompt, self.settings_at(seed), on_frame=on_frame, progress=progress)

    def describe(self) -> Dict[str, Any]:
        return {"models": self.models.info, "device": str(self.models.device)}

    @property
    def guide(self) -> Optional[dict]:
        """The CLIP the images were optimized against: a judge that is the guide grades its own work."""
        return self.models.info["clip"]

    def summary_line(self, result: GenerationResult) -> str:
        chosen = result.chosen_frame
        parts = [f"it {chosen.iteration} of {result.iterations_done}"
                 + (", the judge's pick" if chosen.judge_score is not None else "")
                 + (f" of candidate {result.candidate + 1} of {len(result.candidate_scores)}"
                    if result.candidate is not None else "")
                 + (", stopped early" if result.stopped_early else ""),
                 f"guide CLIP similarity of the whole image {chosen.similarity:.4f}"]
        if chosen.judge_score is not None:
            parts.append(f"judge {chosen.judge_score:.4f}")
        parts.append(f"{result.seconds_per_iteration:.3f} s/it")
        return "; ".join(parts)
