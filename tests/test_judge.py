"""The analytic judge: it must accept the dataset's own captions, reject altered ones, survive
noise and resizing, and parse exactly the caption grammar data.py writes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clipdraw.toy import judge
from clipdraw.toy.data import BACKGROUND, COLORS, PLURALS, SHAPES, Scene, Shape, render, scene_at
from clipdraw.toy.judge import ObjectSpec, Spec, check, describe, detect, parse_caption, satisfies

N_SCENES = 300
SEED = 123


@pytest.fixture(scope="module")
def judged():
    """Scenes of both splits with their clean renders' detections, computed once for the module."""
    out = {}
    for split in ("train", "heldout"):
        scenes = [scene_at(i, SEED, split) for i in range(N_SCENES)]
        out[split] = [(s, detect(render(s))) for s in scenes]
    return out


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_accepts_own_captions(judged, split):
    rate = np.mean([check(parse_caption(s.caption), dets) for s, dets in judged[split]])
    assert rate >= 0.98, f"{split}: judge accepts only {rate:.3f} of the dataset's own captions"


def test_detections_match_scene_objects(judged):
    """Not just the verdict: attributes and centres agree with the scene's ground truth."""
    hits = total = 0
    for s, dets in judged["train"] + judged["heldout"]:
        truth = sorted((o.color, o.shape, o.size) for o in s.objects)
        seen = sorted((d.color, d.shape, d.size) for d in dets)
        total += 1
        hits += truth == seen and all(
            min(abs(d.cx - o.cx) + abs(d.cy - o.cy) for d in dets) < 2 for o in s.objects)
    assert hits / total >= 0.98


def test_measure_accuracy_matches():
    assert judge.measure_accuracy(40, SEED, "heldout") >= 0.95
    with pytest.raises(ValueError):
        judge.measure_accuracy(0, SEED, "train")


# --- negatives: altered captions ------------------------------------------------------------------

def _next(seq, item):
    seq = list(seq)
    return seq[(seq.index(item) + 1) % len(seq)]


def _change_color(caption: str) -> str:
    m = re.search(r"\b(" + "|".join(COLORS) + r")\b", caption)
    return caption[:m.start()] + _next(COLORS, m.group(1)) + caption[m.end():]


def _change_shape(caption: str) -> str:
    words = list(SHAPES) + list(PLURALS.values())
    m = re.search(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r")\b", caption)
    word = m.group(1)
    if word in SHAPES:
        new = _next(SHAPES, word)
    else:
        new = PLURALS[_next(SHAPES, [s for s, p in PLURALS.items() if p == word][0])]
    return caption[:m.start()] + new + caption[m.end():]


def _swap_relation(caption: str) -> str:
    opposite = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
    m = re.search(r"\b(above|below|left of|right of)\b", caption)
    return caption[:m.start()] + opposite[m.group(1)] + caption[m.end():]


def _swap_objects(caption: str) -> str:
    m = re.match(r"^(.*?)(an? \w+ \w+) (is )?(above|below|left of|right of) (an? \w+ \w+)$", caption)
    return f"{m.group(1)}{m.group(5)} {m.group(3) or ''}{m.group(4)} {m.group(2)}"


def _wrong_count(caption: str) -> str:
    if caption.startswith("one "):
        color, shape = caption.split()[1:3]
        return f"two {color} {PLURALS[shape]}"
    return re.sub(r"\b(two|three)\b", lambda m: {"two": "three", "three": "two"}[m.group(1)], caption, count=1)


def _alterations(scene: Scene):
    yield "color", _change_color(scene.caption)
    yield "shape", _change_shape(scene.caption)
    if scene.kind == "relation":
        yield "relation", _swap_relation(scene.caption)
        yield "objects", _swap_objects(scene.caption)
    if scene.kind == "count" or scene.caption.startswith("one "):
        yield "count", _wrong_count(scene.caption)


def test_alterations_are_real():
    """The substitutions above must change the caption into another parseable caption."""
    for i in range(200):
        scene = scene_at(i, SEED, "train")
        for kind, altered in _alterations(scene):
            assert altered != scene.caption, (kind, scene.caption)
            assert parse_caption(altered) != parse_caption(scene.caption), (kind, scene.caption, altered)


def test_rejects_altered_captions(judged):
    rejected, totals = {}, {}
    for split in ("train", "heldout"):
        for scene, dets in judged[split]:
            for kind, altered in _alterations(scene):
                totals[kind] = totals.get(kind, 0) + 1
                rejected[kind] = rejected.get(kind, 0) + (not check(parse_caption(altered), dets))
    assert set(totals) == {"color", "shape", "relation", "objects", "count"}
    for kind in totals:
        assert totals[kind] >= 50, kind
        assert rejected[kind] / totals[kind] >= 0.98, (kind, rejected[kind], totals[kind])
    assert sum(rejected.values()) / sum(totals.values()) >= 0.98


# --- robustness -----------------------------------------------------------------------------------

def _noisy(image: np.ndarray, rng: np.random.Generator, std: float = 15.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)


def _upscale(image: np.ndarray, factor: int = 2) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.BILINEAR))


@pytest.mark.parametrize("variant", ["upscale_then_noise", "noise_at_64", "blur_noise_upscale"])
def test_robust_to_noise_and_resizing(variant):
    rng = np.random.default_rng(0)
    ok = []
    for split in ("train", "heldout"):
        for i in range(150):
            scene = scene_at(i, SEED, split)
            image = render(scene)
            if variant == "upscale_then_noise":
                image = _noisy(_upscale(image), rng)
            elif variant == "noise_at_64":
                image = _noisy(image, rng)
            else:
                blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.0)))
                image = _upscale(_noisy(blurred, rng, 10.0))
            assert image.shape[0] != 64 or variant == "noise_at_64"
            ok.append(satisfies(scene.caption, image))
    assert np.mean(ok) >= 0.95, f"{variant}: {np.mean(ok):.3f}"


def test_accepts_other_input_layouts():
    scene = scene_at(3, SEED, "train")
    image = render(scene)
    for variant in (render(scene, size=100), image.astype(np.float32) / 255, np.moveaxis(image, -1, 0),
                    np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)):
        assert satisfies(scene.caption, variant)


# --- blank and hand-made images -------------------------------------------------------------------

@pytest.mark.parametrize("fill", [BACKGROUND, (255, 255, 255), (0, 0, 0)])
def test_blank_image_satisfies_nothing(fill):
    blank = np.zeros((64, 64, 3), np.uint8) + np.array(fill, np.uint8)
    noisy_blank = _noisy(blank, np.random.default_rng(1))
    for image in (blank, noisy_blank):
        assert detect(image) == []
        assert describe(image) == "nothing found"
        for i in range(30):
            assert not satisfies(scene_at(i, SEED, "train").caption, image)


def test_extra_object_fails_single_caption():
    alone = Scene("single", (Shape("circle", "red", "large", 20, 32),), "a red circle")
    crowded = Scene("single", alone.objects + (Shape("square", "blue", "small", 50, 50),), "x")
    assert satisfies("a red circle on the left", render(alone))
    assert satisfies("a large red circle", render(alone))
    assert not satisfies("a small red circle", render(alone))
    assert not satisfies("a red circle on the right", render(alone))
    assert not satisfies("a red circle", render(crowded))
    assert satisfies("a red circle and a blue square", render(crowded))


def test_relation_between_identical_objects():
    scene = Scene("relation", (Shape("circle", "red", "small", 30, 12), Shape("circle", "red", "small", 34, 50)), "x")
    image = render(scene)
    assert satisfies("a red circle above a red circle", image)
    assert satisfies("a red circle below a red circle", image)   # either may be "a"
    assert not satisfies("a red circle left of a red circle", image)   # 4 px is no relation
    assert satisfies("two red circles", image)


def test_describe_round_trips(judged):
    for split in ("train", "heldout"):
        for scene, _ in judged[split][:60]:
            image = render(scene)
            text = describe(image)
            assert satisfies(text, image), (scene.caption, text)
    mixed = Scene("x", (Shape("circle", "red", "small", 10, 10), Shape("square", "blue", "large", 40, 40),
                        Shape("circle", "red", "small", 10, 50)), "x")
    assert describe(render(mixed)) == "two red circles and a blue square"
    pair = Scene("x", (Shape("square", "green", "small", 20, 50), Shape("circle", "red", "small", 25, 15)), "x")
    assert describe(render(pair)) == "a red circle above a green square"
    single = Scene("x", (Shape("triangle", "yellow", "large", 45, 30),), "x")
    assert describe(render(single)) == "a large yellow triangle on the right"


# --- parsing --------------------------------------------------------------------------------------

def _o(shape, color, size=None):
    return ObjectSpec(shape, color, size)


@pytest.mark.parametrize("caption,expected", [
    ("a red circle", Spec("single", (_o("circle", "red"),))),
    ("A Red Circle.", Spec("single", (_o("circle", "red"),))),
    ("a large blue square", Spec("single", (_o("square", "blue", "large"),))),
    ("one yellow triangle", Spec("single", (_o("triangle", "yellow"),))),
    ("a green circle on the left", Spec("single", (_o("circle", "green"),), position="left")),
    ("a photo of a small red triangle on the bottom",
     Spec("single", (_o("triangle", "red", "small"),), position="bottom")),
    ("a drawing of a blue circle", Spec("single", (_o("circle", "blue"),))),
    ("a large green square at the top", Spec("single", (_o("square", "green", "large"),), position="top")),
    ("two green circles", Spec("count", (_o("circle", "green"),) * 2)),
    ("a photo of three red triangles", Spec("count", (_o("triangle", "red"),) * 3)),
    ("three squares, all blue", Spec("count", (_o("square", "blue"),) * 3)),
    ("a red circle above a green square",
     Spec("relation", (_o("circle", "red"), _o("square", "green")), relation="above")),
    ("a photo of a blue triangle below a yellow circle",
     Spec("relation", (_o("triangle", "blue"), _o("circle", "yellow")), relation="below")),
    ("a yellow square is left of a red square",
     Spec("relation", (_o("square", "yellow"), _o("square", "red")), relation="left of")),
    ("a green circle is right of a blue triangle",
     Spec("relation", (_o("circle", "green"), _o("triangle", "blue")), relation="right of")),
    ("two red circles and a blue square",
     Spec("set", (_o("circle", "red"), _o("circle", "red"), _o("square", "blue")))),
])
def test_parse_caption(caption, expected):
    assert parse_caption(caption) == expected


@pytest.mark.parametrize("caption", [
    "", "a purple circle", "a red hexagon", "a cat", "red circle on the moon", "two red circle and",
    "a red circle near a blue square", "zero red circles", "a red circle on the left of a blue square",
])
def test_parse_rejects_unknown(caption):
    with pytest.raises(ValueError):
        parse_caption(caption)


def test_parses_every_dataset_caption():
    for split in ("train", "heldout"):
        for i in range(300):
            scene = scene_at(i, 7, split)
            spec = parse_caption(scene.caption)
            assert spec.kind == scene.kind
            assert sorted((o.color, o.shape) for o in spec.objects) == sorted((o.color, o.shape) for o in scene.objects)
            assert spec.position == scene.mentions.get("position")
            assert spec.relation == scene.relation
