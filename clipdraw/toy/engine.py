"""The toy world behind the same interfaces as the real one: ``load_toy_models`` gives the
optimizer its ``Models``; ``TransformerEngine`` is the autoregressive paradigm in miniature,
returning the same ``GenerationResult`` so the same output path writes it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from tqdm.auto import tqdm

from ..device import resolve_device, resolve_precision
from ..errors import ClipdrawError
from ..models import ClipModel, DVAEDecoder, Models
from ..optimize import Frame, GenerationResult, to_pil
from ..prompts import parse_prompts
from .models import load_toy_clip, load_toy_dvae, load_toy_gpt, weights_dir


def load_toy_models(device: Union[str, torch.device] = "cpu", root: Optional[Path] = None,
                    judge: bool = True, precision: Union[str, torch.dtype, None] = "auto") -> Models:
    """The shipped toy CLIP and dVAE decoder, ready for ``clipdraw.generate``; with ``judge``,
    also the toy judge CLIP (another seed, never a guide) that picks the result among the frames.
    ``precision`` as in ``clipdraw.load_models``."""
    root = root or weights_dir()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else resolve_precision(precision)
    _, decoder = load_toy_dvae(root)
    dvae = DVAEDecoder(decoder).set_precision(dtype).to(target)
    clip = ClipModel(load_toy_clip(root)).to(target)
    info = {"clip": {"name": "toy", "path": str(root / "clip.safetensors"), "input_resolution": clip.input_resolution},
            "decoder": {"name": "toy", "path": str(root / "dvae.safetensors"), "vocab_size": dvae.vocab_size,
                        "upsample_factor": dvae.upsample_factor,
                    "dtype": str(dvae.compute_dtype).removeprefix("torch.")}}
    judge_model = ClipModel(load_toy_clip(root, "judge")).to(target) if judge else None
    if judge:
        info["judge"] = {"name": "toy-judge", "path": str(root / "judge.safetensors")}
    return Models(clip=clip, decoder=dvae, device=target, info=info, judge=judge_model, precision=dtype)


@dataclass
class SamplingConfig:
    """Settings of one autoregressive sample."""

    seed: int = 0
    temperature: float = 1.0
    top_k: int = 32
    save_every: Optional[int] = None   # image tokens between saved frames; None: one row of the token grid

    def __post_init__(self):
        if not self.temperature > 0:
            raise ClipdrawError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0 or (self.save_every is not None and self.save_every <= 0):
            raise ClipdrawError("top-k must be >= 0 and save-every positive")


class TransformerEngine:
    """Caption words -> GPT -> dVAE tokens -> decoder -> image, scored by the CLIP in ``models``.

    ``root`` is a folder holding transformer.safetensors: by default the shipped toy one; one
    written by ``clipdraw toy train --coco`` pairs with the real dVAE decoder and CLIP."""

    name = "transformer"

    def __init__(self, models: Models, root: Optional[Path] = None):
        self.models = models
        self.gpt, self.tokenizer = load_toy_gpt(root)
        if self.gpt.image_vocab != models.decoder.vocab_size:
            raise ClipdrawError(f"the transformer in {root or weights_dir()} draws {self.gpt.image_vocab} dVAE codes but "
                                f"the decoder has {models.decoder.vocab_size}: pair a toy transformer with --model toy, "
                                "a --coco one with the openai decoder")
        grid = math.isqrt(self.gpt.image_tokens)
        if grid * grid != self.gpt.image_tokens:
            raise ClipdrawError(f"the transformer draws {self.gpt.image_tokens} tokens, not a square grid")
        self.grid = grid
        self.gpt.to(models.device)

    @torch.no_grad()
    def _image(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.models.decoder.decode_tokens(tokens.view(-1, self.grid, self.grid))

    def generate(self, prompt: str, config: Optional[SamplingConfig] = None,
                 on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True) -> GenerationResult:
        config = config or SamplingConfig()
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
        with torch.no_grad():
            try:
                for step in tqdm(range(1, total + 1), desc="sampling", unit="tok", disable=not progress):
                    tokens = self.gpt.next_token(words, tokens, generator, config.temperature, config.top_k)
                    if step % save_every == 0 or step == total:
                        # Unsampled positions show token 0 until they are drawn: the image forms row by row.
                        padded = torch.cat([tokens, tokens.new_zeros(1, total - step)], 1)
                        image = self._image(padded)
                        similarity = float((self.models.clip.encode_image(image) @ text_embed.T)[0, 0])
                        frames.append(Frame(step, to_pil(image[0]), similarity))
                        if on_frame:
                            on_frame(frames[-1])
            except KeyboardInterrupt:
                interrupted = True
        if not frames:
            raise ClipdrawError("interrupted before the first frame")
        return GenerationResult(prompt=prompt, prompts=prompts, config=config, image=frames[-1].image, frames=frames,
                                losses=[], similarities=[f.similarity for f in frames],
                                iterations_done=tokens.shape[1], seconds=time.perf_counter() - start,
                                interrupted=interrupted, latents=tokens)
