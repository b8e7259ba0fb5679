"""The frame picker (clipdraw.picking): twin captions from the toy grammar, the flatness
statistics, and the contrastive score with the toy judge CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataclasses import replace
from types import SimpleNamespace

from clipdraw.config import GenerationConfig
from clipdraw.picking import (FramePicker, flatness_penalties, flatness_statistics, foreground, frame_pickers,
                              parts_alone, toy_object_count, toy_twin_captions)
from clipdraw.prompts import Prompt, Segment
from clipdraw.toy import data
from clipdraw.toy.judge import components


def _changed_words(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a.split(), b.split())) + abs(len(a.split()) - len(b.split()))


def test_twins_change_one_word_of_the_prompt_in_its_own_phrasing():
    twins = toy_twin_captions("a picture of a small red circle in the top")
    assert "a picture of a small blue circle in the top" in twins
    assert "a picture of a small red square in the top" in twins
    assert "a picture of a small red circle in the bottom" in twins
    assert len(twins) == 3 + 2 + 3 and all(_changed_words(t, twins[0]) <= 2 for t in twins)
    assert all(_changed_words(t, "a picture of a small red circle in the top") == 1 for t in twins)


def test_relation_twins_swap_the_relation_and_the_objects_and_drop_one():
    prompt = "a red circle is left of a blue square"
    twins = toy_twin_captions(prompt)
    assert {"a red circle is right of a blue square", "a blue square is left of a red circle",
            "a red circle", "a blue square"} <= set(twins)
    assert prompt not in twins and len(set(twins)) == len(twins)
    # two alike objects: swapping them or the relation says the same thing, so it is no twin
    alike = toy_twin_captions("a red circle above a red circle")
    assert not any(" below " in t for t in alike) and "a red circle" not in alike


def test_a_prompt_outside_the_toy_grammar_has_no_twins():
    assert toy_twin_captions("an oil painting of a lighthouse") == []
    assert toy_object_count("an oil painting of a lighthouse") == 1
    assert toy_object_count("a red circle left of a blue square") == 2


def _scene_image(kind: str, index: int = 3) -> np.ndarray:
    return data.render(data.scene_at(index, 4321, "all", kind)).copy()


def test_flatness_is_zero_for_a_clean_scene_and_sees_patches_and_specks():
    single, relation = _scene_image("single"), _scene_image("relation")
    for image, objects in ((single, 1), (relation, 2)):
        stats = flatness_statistics(image, objects)
        assert stats["off_colour"] < 0.01 and stats["stray"] < 0.01
    scene = data.scene_at(3, 4321, "all", "single")
    obj = scene.objects[0]
    patched = single.copy()
    other = next(c for name, c in data.COLORS.items() if name != obj.color)
    y, x = int(obj.cy), int(obj.cx)
    patched[y - 3:y + 3, x - 3:x + 3] = other            # a patch of another colour inside the object
    assert flatness_statistics(patched, 1)["off_colour"] > 0.05
    speck = single.copy()
    corner = (2, 2) if obj.cx > 20 or obj.cy > 20 else (55, 55)
    speck[corner[0]:corner[0] + 4, corner[1]:corner[1] + 4] = data.COLORS[obj.color]   # a second, stray part
    assert flatness_statistics(speck, 1)["stray"] > 0.02
    assert flatness_statistics(np.full((64, 64, 3), 240, np.uint8))["stray"] == 0.0   # nothing drawn, nothing stray


@pytest.fixture(scope="module")
def toy_judge():
    from clipdraw.toy.world import load_toy_judge

    return load_toy_judge(torch.device("cpu"))[0]


def _tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def test_the_contrastive_score_prefers_the_scene_to_its_colour_twin(toy_judge):
    rng = np.random.default_rng(0)
    right = 0
    scenes = [data.scene_at(i, 777, "all", "single") for i in range(6)]
    for scene in scenes:
        twin = scene
        while twin.objects[0].color == scene.objects[0].color:
            twin = data.twin(scene, rng, "all")
        picker = FramePicker([toy_judge], [scene.caption], [1.0])
        assert len(picker.groups[0]) > 1   # twins were found for every benchmark-style caption
        own, swapped = picker.scores(_tensor([data.render(scene), data.render(twin)]))
        assert own <= 0.0   # a log-probability
        right += own > swapped
    assert right >= 5


def test_the_flatness_penalty_ranks_a_clean_scene_above_the_same_scene_with_a_speck(toy_judge):
    scene = data.scene_at(3, 4321, "all", "single")
    clean = data.render(scene).copy()
    speck = clean.copy()
    obj = scene.objects[0]
    corner = (2, 2) if obj.cx > 20 or obj.cy > 20 else (55, 55)
    other = next(c for name, c in data.COLORS.items() if name != obj.color)
    speck[corner[0]:corner[0] + 5, corner[1]:corner[1] + 5] = other
    images = _tensor([clean, speck])
    flat = FramePicker([toy_judge], [scene.caption], [1.0], flatness_weight=20.0).scores(images)
    plain = FramePicker([toy_judge], [scene.caption], [1.0]).scores(images)
    assert flat[0] > flat[1]
    assert flat[1] - plain[1] < flat[0] - plain[0] - 0.5   # the speck cost its frame more than the clean one
    # The parts that benchmarks/toy_judges.py re-scores saved frames with make the same score, bit for bit.
    picker = FramePicker([toy_judge], [scene.caption], [1.0], flatness_weight=20.0)
    parts = picker.total(picker.clip_scores(images), flatness_penalties(images, toy_object_count(scene.caption)))
    assert parts.tolist() == flat
    # ... and so do they for two objects, the object-wise term among the parts as toy_judges.py passes it.
    relation = data.scene_at(1, 4321, "all", "relation")
    two = _tensor([data.render(relation), data.render(scene)])
    picker = FramePicker([toy_judge], [relation.caption], [1.0], flatness_weight=20.0, object_clips=[toy_judge],
                         object_weight=1.0)
    clip_scores, penalties = picker.clip_scores(two), flatness_penalties(two, toy_object_count(relation.caption))
    with_objects = picker.total(clip_scores, penalties, picker.object_scores(two))
    assert with_objects.tolist() == picker.scores(two)
    assert not torch.equal(with_objects, picker.total(clip_scores, penalties))   # the object term counts


def test_without_twins_or_flatness_the_score_is_the_weighted_cosine(toy_judge):
    images = _tensor([_scene_image("single", i) for i in range(3)])
    texts, weights = ["an oil painting of a lighthouse", "a sketch", "a blur"], [2.0, 1.0, -1.0]
    scores = FramePicker([toy_judge], texts, weights).scores(images)
    cos = toy_judge.encode_image(images) @ toy_judge.encode_text(texts).T
    expected = (cos[:, 0] * 2 + cos[:, 1]) / 3   # negative prompts do not score
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(ValueError):
        FramePicker([toy_judge], ["a blur"], [-1.0])


def test_an_empty_frame_is_not_the_best_one(toy_judge):
    """A blank start's frame 0 shows nothing: nothing off-colour, nothing stray, and a judge
    that cannot tell what is asked; the flatness penalty must still rank it below a drawing."""
    scene = data.scene_at(3, 4321, "all", "single")
    blank = np.full((64, 64, 3), data.BACKGROUND, np.uint8)
    assert flatness_statistics(blank)["missing"] == 1.0
    assert flatness_statistics(data.render(scene))["missing"] == 0.0
    clean, empty = FramePicker([toy_judge], [scene.caption], [1.0], flatness_weight=20.0).scores(
        _tensor([data.render(scene), blank]))
    assert clean > empty


def test_parts_alone_shows_each_object_of_a_relation_scene_by_itself():
    image = _scene_image("relation")
    background, mask = foreground(image)
    views = parts_alone(image, 2)
    masks = [foreground(view)[1] for view in views]
    assert all(len(components(m, diagonal=True)) == 1 for m in masks)        # one object in each
    assert not (masks[0] & masks[1]).any() and np.array_equal(masks[0] | masks[1], mask)
    assert masks[0].sum() >= masks[1].sum()                                   # the larger part first
    assert np.array_equal(views[0][masks[0]], image[masks[0]])                # drawn as it was
    assert np.array_equal(parts_alone(image, 3)[2], image)                    # no third part: the frame itself


def _recoloured_first_object(scene):
    first = scene.objects[0]
    other = next(c for c in data.COLORS if c not in (first.color, scene.objects[1].color))
    return replace(scene, objects=(replace(first, color=other), *scene.objects[1:]))


def test_the_object_term_prefers_both_objects_right_and_ignores_their_order(toy_judge):
    """Each object read alone: a relation scene scores above the same scene with its first object
    recoloured, and naming the objects in the other order reads the same."""
    right = 0
    for index in range(6):
        scene = data.scene_at(index, 555, "all", "relation")
        images = _tensor([data.render(scene), data.render(_recoloured_first_object(scene))])
        picker = FramePicker([toy_judge], [scene.caption], [1.0], object_clips=[toy_judge], object_weight=1.0)
        own, wrong = picker.object_scores(images).tolist()
        assert own <= 0.0   # a mean of log-probabilities
        right += own > wrong
        first, second = (f"a {o.color} {o.shape}" for o in scene.objects)
        swapped = FramePicker([toy_judge], [f"{second} and {first}"], [1.0], object_clips=[toy_judge],
                              object_weight=1.0)
        assert swapped.object_scores(images).tolist() == pytest.approx([own, wrong], abs=1e-5)
        plain = FramePicker([toy_judge], [scene.caption], [1.0]).scores(images)
        assert picker.scores(images) == pytest.approx([p + o for p, o in zip(plain, [own, wrong])], abs=1e-4)
    assert right >= 5


def test_the_object_term_leaves_one_object_prompts_alone(toy_judge):
    scene = data.scene_at(3, 4321, "all", "single")
    images = _tensor([data.render(scene), _scene_image("relation")])
    with_term = FramePicker([toy_judge], [scene.caption], [1.0], flatness_weight=20.0, object_clips=[toy_judge],
                            object_weight=1.0)
    without = FramePicker([toy_judge], [scene.caption], [1.0], flatness_weight=20.0)
    assert with_term.object_clips == [] and with_term.scores(images) == without.scores(images)


def test_frame_pickers_read_objects_with_the_judge_and_the_guide(toy_judge):
    guide = SimpleNamespace(encode_text=toy_judge.encode_text, encode_image=toy_judge.encode_image)
    models = SimpleNamespace(judge=toy_judge, clip=guide)
    schedule = [Segment(0, "a red circle above a blue square", (Prompt("a red circle above a blue square"),))]
    assert frame_pickers(models, schedule, GenerationConfig()) is None                  # nothing asked of the pick
    picker, = frame_pickers(models, schedule, GenerationConfig(pick_objects=0.5))
    assert picker.object_clips == [toy_judge, guide] and picker.object_weight == 0.5 and picker.flatness_weight == 0
    with pytest.raises(Exception, match="pick-objects"):
        GenerationConfig(pick_objects=-1.0)
