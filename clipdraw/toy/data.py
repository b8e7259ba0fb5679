"""A procedural image-caption world small enough to train every piece of DALL-E on a CPU.

Images are 64x64 flat-coloured shapes on a plain background; captions come from varied
templates. Every scene is a pure function of (seed, index, split), so the dataset needs no
storage and is identical on every machine. Some colour-shape pairs are held out of
training entirely, to test whether models compose attributes they saw only apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
BACKGROUND = (240, 240, 240)
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 18, "large": 28}          # side of the shape's bounding box, in pixels
POSITIONS = ("left", "right", "top", "bottom")
RELATIONS = ("above", "below", "left of", "right of")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}

# Never in training: the composition test asks for these pairs, seen only as separate attributes.
HELDOUT_PAIRS = frozenset({("yellow", "circle"), ("green", "triangle"), ("blue", "square")})
SCENE_KINDS = ("single", "count", "relation")


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    cx: float     # centre, in pixels
    cy: float

    @property
    def side(self) -> int:
        return SIZES[self.size]


@dataclass(frozen=True)
class Scene:
    kind: str                        # "single", "count" or "relation"
    objects: Tuple[Shape, ...]
    caption: str
    position: Optional[str] = None   # single: where the object is (left/right/top/bottom)
    relation: Optional[str] = None   # relation: objects[0] <relation> objects[1]
    mentions: dict = field(default_factory=dict, compare=False)  # which attributes the caption states


def allowed_pairs(split: str) -> List[Tuple[str, str]]:
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    if split == "train":
        return [p for p in pairs if p not in HELDOUT_PAIRS]
    if split == "heldout":
        return sorted(HELDOUT_PAIRS)
    if split == "all":
        return pairs
    raise ValueError(f"unknown split {split!r}: train, heldout or all")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place(rng: np.random.Generator, side: int, region: Tuple[float, float, float, float]) -> Tuple[float, float]:
    """A centre inside region (x0, y0, x1, y1 as fractions of the image) keeping the shape whole."""
    x0, y0, x1, y1 = (v * IMAGE_SIZE for v in region)
    half = side / 2 + 2
    cx = rng.uniform(max(x0 + half, half), min(x1 - half, IMAGE_SIZE - half))
    cy = rng.uniform(max(y0 + half, half), min(y1 - half, IMAGE_SIZE - half))
    return float(cx), float(cy)


POSITION_REGIONS = {"left": (0.0, 0.2, 0.5, 0.8), "right": (0.5, 0.2, 1.0, 0.8),
                    "top": (0.2, 0.0, 0.8, 0.5), "bottom": (0.2, 0.5, 0.8, 1.0)}


def _single(rng: np.random.Generator, pairs) -> Scene:
    color, shape = pairs[rng.integers(len(pairs))]
    size = ("small", "large")[rng.integers(2)]
    position = POSITIONS[rng.integers(len(POSITIONS))]
    side = SIZES[size]
    region = POSITION_REGIONS[position] if size == "small" else {
        "left": (0.0, 0.1, 0.55, 0.9), "right": (0.45, 0.1, 1.0, 0.9),
        "top": (0.1, 0.0, 0.9, 0.55), "bottom": (0.1, 0.45, 0.9, 1.0)}[position]
    obj = Shape(shape, color, size, *_place(rng, side, region))
    templates = [
        ("{a} {color} {shape}", {"color", "shape"}),
        ("{a} {size} {color} {shape}", {"size", "color", "shape"}),
        ("one {color} {shape}", {"color", "shape", "count"}),
        ("{a} {color} {shape} on the {position}", {"color", "shape", "position"}),
        ("a photo of {a} {size} {color} {shape} on the {position}", {"size", "color", "shape", "position"}),
        ("a drawing of {a} {color} {shape}", {"color", "shape"}),
        ("{a} {size} {color} {shape} at the {position}", {"size", "color", "shape", "position"}),
    ]
    template, mentioned = templates[rng.integers(len(templates))]
    words = {"color": color, "shape": shape, "size": size, "position": position}
    next_word = template.split("{a} ", 1)[1].split()[0].strip("{}") if "{a}" in template else "color"
    caption = template.format(a=_article(words[next_word]), **words)
    mentions = {k: (1 if k == "count" else words[k]) for k in mentioned}
    return Scene("single", (obj,), caption, position=position, mentions=mentions)


def _count(rng: np.random.Generator, pairs) -> Scene:
    color, shape = pairs[rng.integers(len(pairs))]
    n = int(rng.integers(2, 4))
    objects: List[Shape] = []
    side = SIZES["small"]
    tries = 0
    while len(objects) < n:   # rejection sampling: no overlaps; start over when the first ones block the rest
        tries += 1
        if tries % 50 == 0:
            objects = []
        cx, cy = _place(rng, side, (0, 0, 1, 1))
        if all(abs(cx - o.cx) > side + 4 or abs(cy - o.cy) > side + 4 for o in objects):
            objects.append(Shape(shape, color, "small", cx, cy))
    caption = [f"{COUNT_WORDS[n]} {color} {PLURALS[shape]}", f"a photo of {COUNT_WORDS[n]} {color} {PLURALS[shape]}",
               f"{COUNT_WORDS[n]} {PLURALS[shape]}, all {color}"][rng.integers(3)]
    return Scene("count", tuple(objects), caption, mentions={"color": color, "shape": shape, "count": n})


def _relation(rng: np.random.Generator, pairs) -> Scene:
    first = pairs[rng.integers(len(pairs))]
    second = pairs[rng.integers(len(pairs))]
    while second == first:
        second = pairs[rng.integers(len(pairs))]
    relation = RELATIONS[rng.integers(len(RELATIONS))]
    side = SIZES["small"]
    # Object A goes in one half, B in the other, along the relation's axis.
    halves = {"above": ((0.1, 0.0, 0.9, 0.5), (0.1, 0.5, 0.9, 1.0)),
              "below": ((0.1, 0.5, 0.9, 1.0), (0.1, 0.0, 0.9, 0.5)),
              "left of": ((0.0, 0.1, 0.5, 0.9), (0.5, 0.1, 1.0, 0.9)),
              "right of": ((0.5, 0.1, 1.0, 0.9), (0.0, 0.1, 0.5, 0.9))}[relation]
    a = Shape(first[1], first[0], "small", *_place(rng, side, halves[0]))
    b = Shape(second[1], second[0], "small", *_place(rng, side, halves[1]))
    # Keep the relation unambiguous: the main-axis gap must be at least twice the cross-axis offset.
    vertical = relation in ("above", "below")
    gap, cross = (abs(a.cy - b.cy), abs(a.cx - b.cx)) if vertical else (abs(a.cx - b.cx), abs(a.cy - b.cy))
    if gap < side + 4 or cross > gap / 2:
        return _relation(rng, pairs)
    text_a, text_b = f"{first[0]} {first[1]}", f"{second[0]} {second[1]}"
    caption = [f"a {text_a} {relation} a {text_b}", f"a photo of a {text_a} {relation} a {text_b}",
               f"{_article(first[0])} {text_a} is {relation} {_article(second[0])} {text_b}"][rng.integers(3)]
    return Scene("relation", (a, b), caption, relation=relation,
                 mentions={"relation": relation, "objects": (first, second)})


OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of",
            "left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def hard_negative(scene: Scene, rng: np.random.Generator, split: str = "train") -> str:
    """A caption close to the scene's but false for it: one colour, shape, count, position or
    relation changed. Contrastive training on these teaches CLIP what a batch of random scenes
    rarely contrasts (one object vs two, above vs below); only ``split``'s pairs are named, so
    held-out compositions stay unseen."""
    pairs = set(allowed_pairs(split))
    first = scene.objects[0]
    color, shape = first.color, first.shape
    options: List[str] = []
    if scene.kind == "relation":
        b = scene.objects[1]
        options += [f"a {color} {shape} {OPPOSITE[scene.relation]} a {b.color} {b.shape}",
                    f"a {b.color} {b.shape} {scene.relation} a {color} {shape}", f"a {color} {shape}"]
        if (b.color, shape) in pairs and (color, b.shape) in pairs and b.color != color:
            options.append(f"a {b.color} {shape} {scene.relation} a {color} {b.shape}")
    else:
        n = len(scene.objects)
        other_colors = [c for c in COLORS if c != color and (c, shape) in pairs]
        other_shapes = [t for t in SHAPES if t != shape and (color, t) in pairs]
        options += [f"{COUNT_WORDS[m]} {color} {PLURALS[shape]}" if m > 1 else f"a {color} {shape}"
                     for m in COUNT_WORDS if m != n]
        options += [f"a {c} {shape}" if n == 1 else f"{COUNT_WORDS[n]} {c} {PLURALS[shape]}" for c in other_colors]
        options += [f"a {color} {t}" if n == 1 else f"{COUNT_WORDS[n]} {color} {PLURALS[t]}" for t in other_shapes]
        if scene.position:
            options.append(f"a {color} {shape} on the {OPPOSITE[scene.position]}")
    return options[int(rng.integers(len(options)))]


def scene_at(index: int, seed: int = 0, split: str = "train", kind: Optional[str] = None) -> Scene:
    """The scene at ``index``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, index, {"train": 0, "heldout": 1, "all": 2}[split]])
    pairs = allowed_pairs(split)
    kind = kind or SCENE_KINDS[int(rng.choice(3, p=[0.5, 0.2, 0.3]))]
    if split == "heldout" and kind == "relation":
        # Held-out relations pair one held-out colour-shape with any other pair.
        others = allowed_pairs("all")
        scene = _relation(rng, others)
        while not any((o.color, o.shape) in HELDOUT_PAIRS for o in scene.objects):
            scene = _relation(rng, others)
        return scene
    return {"single": _single, "count": _count, "relation": _relation}[kind](rng, pairs)


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as an (size, size, 3) uint8 array: flat colours, no anti-aliasing."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        half = obj.side / 2
        box = (obj.cx - half, obj.cy - half, obj.cx + half, obj.cy + half)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(obj.cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    if size != IMAGE_SIZE:
        image = image.resize((size, size), Image.NEAREST)
    return np.asarray(image)


def scenes(n: int, seed: int = 0, split: str = "train", kind: Optional[str] = None) -> List[Scene]:
    return [scene_at(i, seed, split, kind) for i in range(n)]


def image_batch(batch: Sequence[Scene]):
    """Scenes -> float tensor (N, 3, 64, 64) in [0, 1], for training."""
    import torch  # noqa: PLC0415

    return torch.from_numpy(np.stack([render(s) for s in batch])).permute(0, 3, 1, 2).float() / 255


def _swap_word(caption: str, old: str, new: str, count: int = 0) -> str:
    """Replace the word ``old`` (and its plural) by ``new`` in a caption (the first ``count``
    times; 0: all), fixing a/an before it."""
    caption = re.sub(rf"\b{old}(s?)\b", lambda m: new + m.group(1), caption, count=count)
    return re.sub(rf"\b(a|an) {new}\b", f"{_article(new)} {new}", caption)


def twin(scene: Scene, rng: np.random.Generator, split: str = "train") -> Scene:
    """The scene with one thing changed, captioned to match: another shape or colour in the same
    place (for a relation, of its first object), or the relation's two objects swapped. A batch
    holding a scene and its twin makes CLIP tell apart exactly what one word changes, in the
    pixels as well as in the caption."""
    pairs = set(allowed_pairs(split))
    first = scene.objects[0]
    relation = scene.kind == "relation"
    if relation and rng.random() < 0.5:
        a, b = scene.objects
        swapped = (Shape(a.shape, a.color, a.size, b.cx, b.cy), Shape(b.shape, b.color, b.size, a.cx, a.cy))
        opposite = OPPOSITE[scene.relation]
        return Scene(scene.kind, swapped, scene.caption.replace(f" {scene.relation} ", f" {opposite} "),
                     relation=opposite, mentions={**scene.mentions, "relation": opposite})
    options = [("shape", (first.color, s)) for s in SHAPES if s != first.shape]
    options += [("color", (c, first.shape)) for c in COLORS if c != first.color]
    options = [(k, pair) for k, pair in options if pair in pairs and not
               (relation and pair == (scene.objects[1].color, scene.objects[1].shape))]
    if not options:
        return scene
    attribute, (color, shape) = options[int(rng.integers(len(options)))]
    changed = tuple(Shape(shape, color, o.size, o.cx, o.cy) for o in scene.objects[:1 if relation else None])
    old, new = (first.shape, shape) if attribute == "shape" else (first.color, color)
    caption = _swap_word(scene.caption, old, new, count=1 if relation else 0)
    return Scene(scene.kind, changed + scene.objects[len(changed):], caption, position=scene.position,
                 relation=scene.relation, mentions=scene.mentions)
