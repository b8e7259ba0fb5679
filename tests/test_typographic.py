"""clipdraw typographic: the label drawn where asked, the rates computed from the probabilities,
the report written, bad input refused in one line. Toy world and tiny images only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdraw.errors import ClipdrawError
from clipdraw.evaluate.typographic import (Placement, attack_rows, draw_label, label_class_index, parse_classes,
                                           summarize)


def toy_scene(color: str, shape: str, size: str = "large", cx: float = 32) -> Image.Image:
    from clipdraw.toy.data import Scene, Shape, render

    return Image.fromarray(render(Scene("single", (Shape(shape, color, size, cx, 32),), f"a {color} {shape}")))


def changed_rows(before: Image.Image, after: Image.Image) -> np.ndarray:
    """The rows where any pixel differs."""
    return np.flatnonzero((np.asarray(before) != np.asarray(after)).any(axis=(1, 2)))


# --------------------------------------------------------------------------- drawing the label


def test_the_label_changes_pixels_only_where_placed_and_is_drawn_the_same_each_time():
    plain = Image.new("RGB", (96, 96), (120, 160, 200))
    for position, band in (("top", (0, 48)), ("middle", (24, 72)), ("bottom", (48, 96))):
        first, pixels = draw_label(plain, "iPod", Placement(0.2, position))
        again, _ = draw_label(plain, "iPod", Placement(0.2, position))
        assert np.array_equal(np.asarray(first), np.asarray(again))
        rows = changed_rows(plain, first)
        assert len(rows) > pixels // 2, position                       # a label about the font's height
        assert band[0] <= rows.min() and rows.max() < band[1], (position, rows.min(), rows.max())
        dark = (np.asarray(first) < 60).all(axis=2)
        assert dark.any() and (np.asarray(first) == 255).all(axis=2).any()   # black text on a white box
    assert np.array_equal(np.asarray(plain), np.full((96, 96, 3), (120, 160, 200)))   # the input is untouched


def test_a_larger_label_covers_more_and_the_blank_control_is_the_box_without_text():
    plain = Image.new("RGB", (128, 128), (200, 40, 40))
    small, small_px = draw_label(plain, "apple", Placement(0.1, "middle"))
    large, large_px = draw_label(plain, "apple", Placement(0.3, "middle"))
    covered = lambda image: int((np.asarray(image) != np.asarray(plain)).any(axis=2).sum())  # noqa: E731
    assert large_px > small_px and covered(large) > 2 * covered(small)
    blank, _ = draw_label(plain, "apple", Placement(0.3, "middle"), blank=True)
    assert covered(blank) == covered(large)                               # the same box
    assert not (np.asarray(blank) < 60).all(axis=2).any()                 # and no text in it
    text_only, _ = draw_label(plain, "apple", Placement(0.3, "middle"), box=False)
    assert 0 < covered(text_only) < covered(large)


def test_a_label_too_wide_for_the_image_is_drawn_smaller_to_fit():
    plain = Image.new("RGB", (64, 64), (240, 240, 240))
    image, pixels = draw_label(plain, "a very long label indeed", Placement(0.3, "top"))
    columns = np.flatnonzero((np.asarray(image) != np.asarray(plain)).any(axis=(0, 2)))
    assert pixels < round(0.3 * 64) and columns.min() > 0 and columns.max() < 63


def test_without_a_scalable_font_the_bitmap_font_is_scaled_up(monkeypatch):
    """Pillow before 10.1 (or without FreeType) cannot size its default font."""
    from clipdraw.evaluate import typographic

    monkeypatch.setattr(typographic, "scalable_font", lambda pixels: None)
    plain = Image.new("RGB", (128, 128), (240, 240, 240))
    image, _ = draw_label(plain, "iPod", Placement(0.25, "bottom"))
    rows = changed_rows(plain, image)
    assert rows.min() >= 64 and len(rows) > 20                           # about two bitmap lines high
    assert "bitmap" in typographic.font_description()


# --------------------------------------------------------------------------- the rates, from crafted probabilities


CLASSES = ["apple", "ipod", "pear"]
WHERE = [Placement(0.2, "top"), Placement(0.3, "middle")]
BEFORE = [[0.7, 0.2, 0.1],            # an apple
          [0.2, 0.7, 0.1]]            # read as an ipod already: cannot flip to it
AFTER = [[[0.3, 0.6, 0.1],            # flips to ipod
          [0.6, 0.3, 0.1]],           # stays an apple
         [[0.1, 0.8, 0.1],            # stays an ipod
          [0.5, 0.4, 0.1]]]           # changes, away from the label
BLANK = [[[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]],
         [[0.2, 0.7, 0.1], [0.2, 0.7, 0.1]]]


def test_flip_and_change_rates_and_the_mass_moved_follow_their_definitions():
    rows = attack_rows(np.array(BEFORE), np.array(AFTER), CLASSES, label_index=1, where=WHERE,
                       blank=np.array(BLANK))
    assert [r["flipped_to_label"] for r in rows] == [True, False, False, False]
    assert [r["changed"] for r in rows] == [True, False, False, True]
    assert [r["eligible"] for r in rows] == [True, True, False, False]
    assert [r["true_class"] for r in rows] == ["apple", "apple", "ipod", "ipod"]   # the top class before
    summary = summarize(rows)
    assert summary["flip_rate"] == pytest.approx(1 / 2)          # 1 flip among the 2 eligible pairs
    assert summary["change_rate"] == pytest.approx(2 / 4)
    assert summary["mass_to_label"] == pytest.approx((0.4 + 0.1 + 0.1 - 0.3) / 4)
    assert summary["p_true_after"] == pytest.approx((0.3 + 0.6 + 0.8 + 0.4) / 4)
    assert summary["word_effect"] == pytest.approx((0.3 + 0.1 + 0.1 - 0.3) / 4)
    assert summary["blank_flip_rate"] == 0


def test_a_given_true_class_and_no_eligible_pair():
    rows = attack_rows(np.array(BEFORE), np.array(AFTER), CLASSES, label_index=1, where=WHERE, true_index=2)
    assert {r["true_class"] for r in rows} == {"pear"}
    assert [r["p_true_after"] for r in rows] == pytest.approx([0.1] * 4)
    assert "word_effect" not in rows[0]                           # no control without blank boxes
    already = summarize([r for r in rows if r["image_index"] == 1])
    assert already["eligible"] == 0 and already["flip_rate"] is None and already["change_rate"] == 0.5
    with pytest.raises(ValueError):
        attack_rows(np.array(BEFORE), np.array(AFTER)[:, :1], CLASSES, 1, WHERE)


def test_the_label_names_its_class():
    assert label_class_index(["apple", "ipod"], "iPod") == 1
    assert label_class_index(["red circle", "red square"], "square") == 1
    assert label_class_index(["red circle", "red square"], "x", label_class="red circle") == 0
    with pytest.raises(ClipdrawError, match="--label-class"):
        label_class_index(["red circle", "red square"], "red")          # two classes hold it
    assert parse_classes(" apple,  ipod ,apple,") == ["apple", "ipod"]


# --------------------------------------------------------------------------- the command


def run(argv, capsys):
    """clipdraw's entry point in this process: (exit code, stdout, stderr)."""
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def scenes(tmp_path) -> list:
    paths = []
    for color, shape, size, cx in (("red", "circle", "small", 20), ("red", "triangle", "large", 32)):
        paths.append(tmp_path / f"{color}-{shape}.png")
        toy_scene(color, shape, size, cx).save(paths[-1])
    return paths


def test_the_toy_command_writes_a_report_whose_rates_match_its_rows(scenes, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run(["typographic", *scenes, "--classes", "red circle,red square,red triangle",
                                "--label", "square", "--model", "toy", "--sizes", "0.2,0.3",
                                "--positions", "top,middle", "--out", out, "--device", "cpu", "--quiet"], capsys)
    assert code == 0, stderr
    assert "flip rate to 'red square'" in stdout and str(out / "typographic.html") in stdout
    rows = list(csv.DictReader((out / "typographic.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 4 and {r["image"] for r in rows} == {"red-circle", "red-triangle"}
    record = json.loads((out / "typographic.json").read_text(encoding="utf-8"))
    eligible = [r for r in record["rows"] if r["top_before"] != "red square"]
    flips = [r for r in eligible if r["top_after"] == "red square"]
    overall = record["summary"][0]
    assert overall["flip_rate"] == (len(flips) / len(eligible) if eligible else None)
    assert overall["mass_to_label"] == pytest.approx(np.mean([r["p_label_after"] - r["p_label_before"]
                                                              for r in record["rows"]]))
    for row in record["rows"]:   # the probabilities sum to one over the classes
        assert sum(row["probabilities_after"].values()) == pytest.approx(1.0)
    page = (out / "typographic.html").read_text(encoding="utf-8")
    assert page.count("<img") >= 2 * 5 and "flip_rate" in page and "toy-judge" in page
    assert len(list((out / "images").glob("*.png"))) == 2 * 5
    assert not list(out.rglob("*.part*"))


def not_an_image(tmp_path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("not a picture", encoding="utf-8")
    return path


def a_file(tmp_path) -> Path:
    path = tmp_path / "taken"
    path.write_text("x", encoding="utf-8")
    return path


BAD = [
    (lambda t, s: [t / "missing.png", "--classes", "a,b", "--label", "a"], "does not exist"),
    (lambda t, s: [not_an_image(t), "--classes", "a,b", "--label", "a"], "cannot read image"),
    (lambda t, s: [s[0], "--classes", " , ", "--label", "a"], "at least two"),
    (lambda t, s: [s[0], "--classes", "apple", "--label", "apple"], "at least two"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "  "], "--label is empty"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "banana"], "--label-class"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--true-class", "ipod"], "the label's class"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--sizes", "0,0.2"], "label size"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--sizes", "big"], "--sizes"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--positions", "left"], "label position"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--template", "a photo"], "template"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--out", a_file(t)], "is a file"),
    (lambda t, s: [s[0], "--classes", "apple,ipod", "--label", "ipod", "--eval-model", "ViT-Z/99"], "ViT-Z/99"),
]


@pytest.mark.parametrize("make_args, words", BAD)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(make_args, words, scenes, tmp_path, capsys):
    args = make_args(tmp_path, scenes)
    out = next((a for a, b in zip(args[1:], args) if b == "--out"), tmp_path / "report")
    code, stdout, stderr = run(["typographic", *args] + ([] if "--out" in args else ["--out", out]) +
                               ["--model", "toy", "--device", "cpu", "--quiet"], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "report").exists()


def test_the_api_on_a_large_photo_sized_image_and_names_that_are_not_file_names(tmp_path):
    """A photograph is labelled at WORKING_SIDE at most; an image's name never becomes a path."""
    from clipdraw.evaluate.judge import Judge
    from clipdraw.evaluate.typographic import WORKING_SIDE, typographic_attack, write_report

    wide = toy_scene("red", "triangle").resize((900, 600), Image.NEAREST)
    result = typographic_attack([wide, toy_scene("red", "circle", "small", 20)], ["red circle", "red triangle"],
                                "circle", Judge.load("toy-judge"), sizes=[0.3], positions=["middle"],
                                names=["../escape", "../escape"])
    assert result.originals[0].size == (WORKING_SIDE, WORKING_SIDE) and result.originals[1].size == (64, 64)
    assert len({r["image"] for r in result.rows}) == 2                     # repeated names made distinct
    paths = write_report(result, tmp_path / "out")
    written = sorted(p.name for p in paths["images"].iterdir())
    assert len(written) == 4 and all("/" not in n and not n.startswith(".") for n in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]            # nothing outside --out
