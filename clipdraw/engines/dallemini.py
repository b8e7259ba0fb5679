"""dalle-mini as an engine: BART encoder -> decoder samples VQGAN tokens -> detokenizer -> images.

A run gives the same kind of run folder as the optimizer: frames from min-dalle's progressive
outputs (the image every 32 tokens), each candidate scored by CLIP, the best k kept
(``rerank=(n, k)``). Loading min-dalle safely is ``clipdraw.dallemini``'s business.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from PIL import Image

from ..config import DEFAULT_CLIP, DalleMiniConfig, engine_options
from ..dallemini import (FRAME_TOKENS, IMAGE_TOKENS, check_dtype, fetch_weights, import_min_dalle, inference_session,
                         load_min_dalle)
from ..device import resolve_device
from ..errors import ClipdrawError
from ..models import ClipModel
from ..progress import progress_bar
from ..prompts import parse_prompts
from ..results import Frame, Result, to_pil
from .base import Engine, FrameHook, ModelSource


def prompt_text(prompt: str) -> str:
    """The one text dalle-mini conditions on; weighted mixtures are the optimizer's."""
    prompts = parse_prompts(prompt)
    if len(prompts) != 1:
        raise ClipdrawError("dalle-mini draws one text: weighted prompts (a|b:0.5) are for the optimizer")
    return prompts[0].text



@dataclass
class DalleMiniResult(Result):
    """The kept candidates: ``images`` best first, ``scores`` their CLIP similarity;
    ``iterations_done`` counts image tokens over all passes."""

    images: List[Image.Image] = field(default_factory=list, repr=False)
    scores: List[float] = field(default_factory=list)
    candidates: List[dict] = field(default_factory=list)   # every drawn image: index, pass, similarity, rank

    @property
    def final_similarity(self) -> float:
        """Mean CLIP similarity of the kept images, which final.png shows."""
        if not self.scores:
            return self.frames[-1].similarity if self.frames else float("nan")
        return sum(self.scores) / len(self.scores)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(len(self.candidates), 1)

    def kept_images(self) -> List[Tuple[Image.Image, float]]:
        return list(zip(self.images, self.scores))

    def summary(self) -> dict:
        return {**super().summary(), "seconds_per_image": round(self.seconds_per_image, 3),
                "candidates": self.candidates, "kept": [c["index"] for c in
                                                        sorted((c for c in self.candidates if c["rank"]),
                                                               key=lambda c: c["rank"])]}


def image_grid(images: List[Image.Image], columns: int) -> Image.Image:
    """Images side by side, row by row; empty cells stay black."""
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


class DalleMiniEngine(Engine):
    """Prompt -> BART encoder -> decoder samples VQGAN tokens -> detokenizer -> images, CLIP-ranked."""

    name = "dallemini"
    settings_class = DalleMiniConfig
    options = engine_options(name)
    step_unit = "token"

    def __init__(self, model, clip: Optional[ClipModel] = None, settings: Optional[DalleMiniConfig] = None,
                 info: Optional[dict] = None):
        self.model, self.clip, self.settings = model, clip, settings or DalleMiniConfig()
        self.device = torch.device(model.device)
        self.info = info or {}
        if clip is not None:
            clip.to(self.device)

    @classmethod
    def check(cls, settings: DalleMiniConfig, source: ModelSource) -> None:
        if source.model == "toy":
            raise ClipdrawError("--engine dallemini runs min-dalle's own models: leave out --model toy")
        import_min_dalle()   # not installed: one line saying how to get it
        check_dtype(settings.dtype, source.target())

    @classmethod
    def check_prompt(cls, prompt: str, settings: Any = None) -> None:
        prompt_text(prompt)

    @classmethod
    def load(cls, settings: DalleMiniConfig, source: ModelSource) -> "DalleMiniEngine":
        clip_model = source.clip_model if source.score_frames or settings.rerank else None
        return cls.from_files(settings, source.target(), clip_model=clip_model, offline=source.offline)

    def describe(self) -> Dict[str, Any]:
        return {"models": self.info, "device": str(self.device)}

    def summary_line(self, result: "DalleMiniResult") -> str:
        return (f"{len(result.images)} of {len(result.candidates)} image(s), CLIP similarity "
                f"{result.final_similarity:.4f}, {result.seconds_per_image:.2f} s/image")

    @classmethod
    def from_files(cls, config: Optional[DalleMiniConfig] = None, device: Union[str, torch.device] = "auto",
                   clip_model: Optional[str] = DEFAULT_CLIP, offline: bool = False,
                   root: Optional[Path] = None) -> "DalleMiniEngine":
        """Fetch (unless cached) and load the variant ``config`` asks for, and CLIP for ranking.

        ``clip_model=None`` skips CLIP: no scores, and ``rerank`` is refused.
        """
        from ..models import load_clip  # noqa: PLC0415

        config = config or DalleMiniConfig()
        target = device if isinstance(device, torch.device) else resolve_device(device)
        check_dtype(config.dtype, target)
        import_min_dalle()    # a missing package is reported before any download
        paths = fetch_weights(config.mega, offline=offline, root=root)
        clip, clip_info = load_clip(clip_model, target, offline=offline) if clip_model else (None, None)
        model = load_min_dalle(paths, mega=config.mega, dtype=config.dtype, device=target)
        info = {"dallemini": {"name": f"dalle-{config.variant}", "dtype": config.dtype,
                              "folder": str(paths["encoder.pt"].parent),
                              "files": {k: str(p) for k, p in paths.items()},
                              "layers": model.layer_count, "embed": model.embed_count},
                "clip": clip_info}
        return cls(model, clip, config, info=info)

    def _scores(self, pixels: torch.Tensor, text_embed: Optional[torch.Tensor]) -> List[float]:
        if text_embed is None:
            return [float("nan")] * pixels.shape[0]
        return (self.clip.encode_image(pixels.to(self.device)) @ text_embed.T)[:, 0].tolist()

    def generate(self, prompt: str, seed: int, on_frame: FrameHook = None, progress: bool = True) -> DalleMiniResult:
        return self.draw(prompt, self.settings_at(seed), on_frame, progress)

    def draw(self, prompt: str, config: Optional[DalleMiniConfig] = None, on_frame: FrameHook = None,
             progress: bool = True) -> DalleMiniResult:
        """Draw ``config.candidates`` images in passes of grid x grid, keep the best ``config.keep``.

        Frames are each pass's grid every 32 tokens (``iteration`` counts tokens over all
        passes). Ctrl-C ends early: the candidates finished so far are ranked and kept.
        """
        config = config or self.settings
        if (config.mega, config.dtype) != (self.settings.mega, self.settings.dtype):
            raise ClipdrawError(f"this engine holds dalle-{self.settings.variant} in {self.settings.dtype}; "
                                f"the config asks for dalle-{config.variant} in {config.dtype}")
        text = prompt_text(prompt)
        if config.rerank and self.clip is None:
            raise ClipdrawError("rerank needs CLIP: load the engine with a clip model")
        text_embed = self.clip.encode_text([text]) if self.clip is not None else None
        frames: List[Frame] = []
        images: List[Image.Image] = []
        candidates: List[dict] = []
        tokens_done, interrupted = 0, False
        start = time.perf_counter()
        bar = progress_bar(total=config.passes * IMAGE_TOKENS, desc=f"dalle-{config.variant}", unit="tok",
                   disable=not progress, dynamic_ncols=True)
        with inference_session(self.device, seed=config.seed):
            try:
                for pass_index in range(config.passes):
                    stream = self.model.generate_images_stream(
                        text=text, seed=-1, grid_size=config.grid, progressive_outputs=config.progressive,
                        temperature=config.temperature, top_k=config.top_k,
                        supercondition_factor=config.supercondition)   # seed -1: min-dalle must not reseed
                    for step, batch in enumerate(stream, 1):
                        in_pass = min(step * FRAME_TOKENS, IMAGE_TOKENS) if config.progressive else IMAGE_TOKENS
                        pixels = batch.float().div(255).permute(0, 3, 1, 2)       # (grid**2, 3, 256, 256)
                        scores = self._scores(pixels, text_embed)
                        pictures = [to_pil(p) for p in pixels]
                        frame = Frame(pass_index * IMAGE_TOKENS + in_pass, image_grid(pictures, config.grid),
                                      sum(scores) / len(scores))
                        frames.append(frame)
                        if on_frame:
                            on_frame(frame)
                        bar.update(pass_index * IMAGE_TOKENS + in_pass - tokens_done)
                        tokens_done = pass_index * IMAGE_TOKENS + in_pass
                        if in_pass == IMAGE_TOKENS:
                            for picture, score in zip(pictures, scores):
                                candidates.append({"index": len(candidates), "pass": pass_index,
                                                   "similarity": score, "rank": None})
                                images.append(picture)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
        seconds = time.perf_counter() - start
        if not frames:   # Ctrl-C before anything was drawn: nothing to rank or keep
            raise KeyboardInterrupt
        order = list(range(len(candidates)))
        if config.rerank:
            order.sort(key=lambda i: -candidates[i]["similarity"])   # stable: ties keep drawing order
        kept = order[:config.keep]
        for rank, i in enumerate(kept, 1):
            candidates[i]["rank"] = rank
        kept_images = [images[i] for i in kept]
        columns = config.grid if not config.rerank else math.ceil(math.sqrt(len(kept) or 1))
        return DalleMiniResult(
            prompt=prompt, prompts=parse_prompts(prompt), config=config,
            image=image_grid(kept_images, columns) if kept_images else frames[-1].image,
            frames=frames, iterations_done=tokens_done,
            seconds=seconds, interrupted=interrupted, images=kept_images,
            scores=[candidates[i]["similarity"] for i in kept], candidates=candidates)
