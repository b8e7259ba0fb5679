"""The autoregressive paradigm in miniature: a GPT samples dVAE tokens from the caption's words.

The toy transformer by default; one trained by ``clipdraw toy train --coco`` draws with the
real dVAE decoder. CLIP (from the same ``Models``) scores each frame, so its numbers sit beside
the optimizer's."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..config import SamplingConfig, engine_options
from ..errors import ClipdrawError
from ..models import Models
from ..progress import progress_bar
from ..prompts import parse_prompts
from ..results import Frame, Result, to_pil
from ..toy.models import load_toy_gpt, weights_dir
from .base import Engine, FrameHook, ModelSource

UNSAMPLED = 0.5   # the grey of image positions whose tokens are not sampled yet


@dataclass
class SamplingResult(Result):
    """A sample: ``iterations_done`` counts image tokens; ``tokens`` are the sampled dVAE codes."""

    tokens: Optional[torch.Tensor] = None

    step_unit = "token"


class TransformerEngine(Engine):
    """Caption words -> GPT -> dVAE tokens -> decoder -> image, scored by the CLIP in ``models``.

    ``root`` is a folder holding transformer.safetensors: by default the shipped toy one; one
    written by ``clipdraw toy train --coco`` pairs with the real dVAE decoder and CLIP."""

    name = "transformer"
    settings_class = SamplingConfig
    options = engine_options(name)
    step_unit = "token"

    def __init__(self, models: Models, root: Optional[Path] = None, settings: Optional[SamplingConfig] = None):
        self.models, self.root, self.settings = models, root, settings or SamplingConfig()
        self.gpt, self.tokenizer = load_toy_gpt(root)
        if self.gpt.image_vocab != models.decoder.vocab_size:
            raise ClipdrawError(f"the transformer in {root or weights_dir()} draws {self.gpt.image_vocab} dVAE codes "
                                f"but the decoder has {models.decoder.vocab_size}: pair a toy transformer with "
                                "--model toy, a --coco one with the openai decoder")
        grid = math.isqrt(self.gpt.image_tokens)
        if grid * grid != self.gpt.image_tokens:
            raise ClipdrawError(f"the transformer draws {self.gpt.image_tokens} tokens, not a square grid")
        self.grid = grid
        self.gpt.to(models.device)

    @classmethod
    def check(cls, settings: SamplingConfig, source: ModelSource) -> None:
        if source.model != "toy" and source.transformer is None:
            raise ClipdrawError("--engine transformer needs --model toy, or --transformer DIR from "
                                "'clipdraw toy train --coco' to draw with the openai dVAE")
        if source.transformer is not None and not (Path(source.transformer) / "transformer.safetensors").is_file():
            raise ClipdrawError(f"no transformer.safetensors in {source.transformer}")

    @classmethod
    def load(cls, settings: SamplingConfig, source: ModelSource) -> "TransformerEngine":
        root = Path(source.transformer) if source.transformer else None
        return cls(source.models(), root, settings)

    def describe(self) -> Dict[str, Any]:
        return {"models": {**self.models.info, "transformer": str(self.root) if self.root else "toy"},
                "device": str(self.models.device)}

    @torch.no_grad()
    def _image(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.models.decoder.decode_tokens(tokens.view(-1, self.grid, self.grid))

    @torch.no_grad()
    def _frame_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """The image of the ``tokens`` sampled so far: unsampled positions are decoded as token 0
        (the decoder needs a full grid) and then painted ``UNSAMPLED`` grey, so that a frame shows
        what is drawn and a plain placeholder, not token 0's picture, where nothing is yet."""
        done, total = tokens.shape[1], self.gpt.image_tokens
        image = self._image(torch.cat([tokens, tokens.new_zeros(tokens.shape[0], total - done)], 1))
        if done < total:
            unsampled = (torch.arange(total, device=image.device) >= done).view(1, 1, self.grid, self.grid)
            block = image.shape[-1] // self.grid   # pixels per token side
            unsampled = unsampled.repeat_interleave(block, 2).repeat_interleave(block, 3)
            image = torch.where(unsampled, torch.full_like(image, UNSAMPLED), image)
        return image

    def generate(self, prompt: str, seed: int, on_frame: FrameHook = None, progress: bool = True) -> SamplingResult:
        """Sample the image tokens one by one; a frame every ``save_every`` tokens, so the image
        forms row by row (positions not yet sampled are grey: ``_frame_image``). A frame's
        similarity is CLIP's of that frame's image, grey and all: what the frame shows.

        Ctrl-C keeps what was drawn: the tokens sampled so far become the last frame."""
        config = self.settings_at(seed)
        prompts = parse_prompts(prompt)
        text = next(p.text for p in prompts if p.weight > 0)
        device = self.models.device
        generator = torch.Generator(device=device).manual_seed(config.seed)
        words = self.tokenizer.encode([text]).to(device)
        text_embed = self.models.clip.encode_text([text])
        frames, start = [], time.perf_counter()
        tokens = torch.zeros(1, 0, dtype=torch.long, device=device)
        interrupted = False
        total = self.gpt.image_tokens
        save_every = config.save_every or self.grid

        def keep_frame():
            image = self._frame_image(tokens)
            similarity = float((self.models.clip.encode_image(image) @ text_embed.T)[0, 0])
            frames.append(Frame(tokens.shape[1], to_pil(image[0]), similarity))
            if on_frame:
                on_frame(frames[-1])

        with torch.no_grad():
            try:
                for step in progress_bar(range(1, total + 1), desc="sampling", unit="tok", disable=not progress):
                    tokens = self.gpt.next_token(words, tokens, generator, config.temperature, config.top_k)
                    if step % save_every == 0 or step == total:
                        keep_frame()
            except KeyboardInterrupt:
                interrupted = True
            if interrupted and (not frames or frames[-1].iteration != tokens.shape[1]):
                keep_frame()   # what the interruption left unsaved, as the optimizer does
        return SamplingResult(prompt=prompt, prompts=prompts, config=config, image=frames[-1].image, frames=frames,
                              iterations_done=tokens.shape[1], seconds=time.perf_counter() - start,
                              interrupted=interrupted, tokens=tokens)
