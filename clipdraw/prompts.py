"""What a run is asked for, as written on the command line (no torch here):

- weighted prompts: ``"a tree|a house:0.5|blurry:-1"`` -> three texts, weights 1, 0.5, -1;
- prompt schedules: ``"a red circle^a blue square"`` or ``"0:a red circle^600:a blue square"``;
- image prompts: ``"cat.png:0.5"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import ClipdrawError

_WEIGHT = re.compile(r"^(?P<text>.*?):\s*(?P<weight>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$", re.S)


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0


def parse_prompts(spec: str) -> List[Prompt]:
    """Split on ``|``; a trailing ``:number`` is the weight (negative pushes away).

    A colon not followed by a number stays part of the text ("photo: a cat").
    """
    if spec is None or not spec.strip():
        raise ClipdrawError("the prompt is empty: give the text to draw, e.g. \"a photo of albert einstein\"")
    prompts = []
    for part in spec.split("|"):
        match = _WEIGHT.match(part)
        text, weight = (match["text"], float(match["weight"])) if match else (part, 1.0)
        text = " ".join(text.split())
        if not text:
            raise ClipdrawError(f"empty text in prompt {spec!r}: every '|'-separated part needs words")
        if not math.isfinite(weight):
            raise ClipdrawError(f"prompt {spec!r}: the weight of {text!r} is too large to be a number")
        prompts.append(Prompt(text, weight))
    if not any(p.weight > 0 for p in prompts):
        raise ClipdrawError(f"prompt {spec!r} has no positive weight: nothing to draw towards")
    return prompts


_NUMBER = r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
_WEIGHTED_PATH = re.compile(rf"^(?P<path>.+):(?P<weight>{_NUMBER})$")
_SEGMENT_START = re.compile(r"^\s*(?P<start>\d+)\s*:(?P<rest>.*)$", re.S)


@dataclass(frozen=True)
class ImagePrompt:
    path: str
    weight: float = 1.0


def parse_image_prompt(spec: str) -> ImagePrompt:
    """``"cat.png"`` -> weight 1; ``"cat.png:0.5"``, ``"cat.png:-1"`` (pushes away). A path
    that itself ends in ``:number`` exists as a file and is taken whole."""
    match = _WEIGHTED_PATH.match(spec)
    if match and not Path(spec).expanduser().exists():
        if not math.isfinite(float(match["weight"])):
            raise ClipdrawError(f"image prompt {spec!r}: its weight is too large to be a number")
        return ImagePrompt(match["path"], float(match["weight"]))
    return ImagePrompt(spec)


@dataclass(frozen=True)
class Segment:
    """One part of a prompt schedule: its text prompts hold from iteration ``start`` (0-based:
    the updates already taken) until the next segment's start."""

    start: int
    text: str
    prompts: Tuple[Prompt, ...]


def parse_schedule(spec: str, iters: Optional[int] = None) -> List[Segment]:
    """``"a^b"`` -> a for the first half of ``iters``, b for the second; ``"0:a^600:b"`` -> b
    from iteration 600. A spec without ``^`` is one segment from 0. Starts, when given, are
    given for every part, start at 0 and increase; with ``iters`` None only the form is checked.

    Text-free specs (image prompts alone) are one empty segment."""
    if spec is None or not spec.strip():
        return [Segment(0, "", ())]
    parts = spec.split("^")
    if len(parts) == 1:
        return [Segment(0, spec, tuple(parse_prompts(spec)))]
    matches = [_SEGMENT_START.match(part) for part in parts]
    if any(matches) and not all(matches):
        raise ClipdrawError(f"prompt schedule {spec!r}: give a start iteration to every part (\"0:a red circle^"
                            f"600:a blue square\") or to none (equal parts)")
    if all(matches):
        starts, texts = [int(m["start"]) for m in matches], [m["rest"] for m in matches]
        if starts[0] != 0:
            raise ClipdrawError(f"prompt schedule {spec!r}: the first part must start at iteration 0")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ClipdrawError(f"prompt schedule {spec!r}: start iterations must increase ({', '.join(map(str, starts))})")
        if iters is not None and starts[-1] >= iters:
            raise ClipdrawError(f"prompt schedule {spec!r}: part at iteration {starts[-1]} starts after the last "
                                f"iteration ({iters})")
    else:
        texts = parts
        if iters is not None and iters < len(parts):
            raise ClipdrawError(f"prompt schedule {spec!r} has {len(parts)} parts but only {iters} iterations")
        starts = [math.floor(i * (iters or len(parts)) / len(parts)) for i in range(len(parts))]
    return [Segment(start, " ".join(text.split()), tuple(parse_prompts(text))) for start, text in zip(starts, texts)]


def require_something_to_draw(spec: Optional[str], image_prompts: Tuple[str, ...] = ()) -> None:
    """A run needs text or an image to aim at."""
    if not (spec and spec.strip()) and not image_prompts:
        raise ClipdrawError("the prompt is empty: give the text to draw, e.g. \"a photo of albert einstein\", "
                            "or an image prompt (--image-prompt)")
