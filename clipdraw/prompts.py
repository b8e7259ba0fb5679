"""Weighted prompts: ``"a tree|a house:0.5|blurry:-1"`` -> three texts, weights 1, 0.5, -1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List

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
        prompts.append(Prompt(text, weight))
    if not any(p.weight > 0 for p in prompts):
        raise ClipdrawError(f"prompt {spec!r} has no positive weight: nothing to draw towards")
    return prompts
