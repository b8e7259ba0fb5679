"""Evaluation: metric formulas against hand-computed values, dataset readers on files in the
real formats, every command end to end on the toy world, reports, resuming, bad input."""

from __future__ import annotations

import colorsys
import csv
import io
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdraw.errors import ClipdrawError
from clipdraw.evaluate import color, datasets, scores

ROOT = Path(__file__).resolve().parents[1]
TOY_ENTITIES = ROOT / "experiments" / "probes" / "toy_shapes.txt"


def solid(rgb, size=(8, 8)) -> Image.Image:
    return Image.new("RGB", size, tuple(rgb))


def halves(left, right, size=8) -> Image.Image:
    image = Image.new("RGB", (2 * size, size), tuple(left))
    image.paste(solid(right, (size, size)), (size, 0))
    return image


def run_main(*args, cwd: Path = None):
    """clipdraw's console entry point in this process: (exit code, stdout, stderr)."""
    from clipdraw.cli import main

    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
    finally:
        os.chdir(old)
    return exit_info.value.code


class Page(HTMLParser):
    """What a browser would fetch and show: images, tables, headings, text."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.headings, self.text, self.external = [], 0, [], [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        if tag in ("script", "link", "iframe") or (tag == "img" and not attrs.get("src", "").startswith("data:")):
            self.external.append(tag)
        self._in_heading = tag in ("h1", "h2")

    def handle_endtag(self, tag):
        self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings.append(data.strip())


def parse_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


# --------------------------------------------------------------------------- scores


def test_cosines_clipscore_and_probabilities_by_hand():
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [0.6, 0.8]])
    cos = scores.cosine_matrix(images, texts)
    assert np.allclose(cos, [[1.0, 0.6], [0.0, 0.8]])
    assert np.allclose(scores.clip_score(cos), [[2.5, 1.5], [0.0, 2.0]])
    assert scores.clip_score(-0.3) == 0.0   # negative cosines count as no match
    scale = math.log(2) / 0.4               # makes the logit gap of image 0 exactly log 2
    p_text = scores.text_probabilities(cos, scale)
    assert np.allclose(p_text[0], [2 / 3, 1 / 3])
    assert np.allclose(p_text.sum(1), 1)
    p_image = scores.image_probabilities(cos, scale)
    # text 0: cosines 1 and 0 -> logits differ by scale = 2.5 log 2 -> odds 2 ** 2.5
    assert np.allclose(p_image[:, 0], [2 ** 2.5 / (1 + 2 ** 2.5), 1 / (1 + 2 ** 2.5)])
    assert np.allclose(p_image.sum(0), 1)
    table = scores.pair_table(images, texts, scale)
    assert np.allclose(table["cosine_x100"], [[100, 60], [0, 80]])


def test_ranks_and_r_precision_by_hand():
    assert scores.rank_of([0.3, 0.5, 0.1], 0) == 2
    assert scores.rank_of([0.3, 0.5, 0.1], 1) == 1
    assert scores.rank_of([0.5, 0.5], 0) == 2            # a tie counts against
    assert scores.r_precision([0.9, 0.3, 0.2], [0]) == 1.0
    assert scores.r_precision([0.3, 0.5, 0.1], [0]) == 0.0
    assert scores.r_precision([0.9, 0.8, 0.7, 0.1], [0, 2]) == 0.5   # top 2 = {0, 1}
    with pytest.raises(ValueError):
        scores.r_precision([0.1], [])


# --------------------------------------------------------------------------- colour


def test_colourfulness_by_hand():
    assert color.colourfulness(solid((128, 128, 128))) == 0.0
    # pure red: rg = 255, yb = 127.5, no spread -> 0.3 * sqrt(255^2 + 127.5^2)
    assert color.colourfulness(solid((255, 0, 0))) == pytest.approx(0.3 * math.hypot(255, 127.5))
    # half red, half green: rg = +-255 (mean 0, std 255); yb = 127.5 everywhere -> 255 + 0.3 * 127.5
    assert color.colourfulness(halves((255, 0, 0), (0, 255, 0))) == pytest.approx(255 + 0.3 * 127.5)


def test_hsv_matches_colorsys_and_hue_is_circular():
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [30, 60, 90], [200, 100, 150],
                        [0, 0, 0], [255, 255, 255]], dtype=np.float64)
    ours = color.rgb_to_hsv(colours)
    for rgb, (h, s, v) in zip(colours, ours):
        eh, es, ev = colorsys.rgb_to_hsv(*(rgb / 255))
        assert (h, s, v) == pytest.approx((eh * 360, es, ev), abs=1e-9)
    near_red = [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue / 360, 1, 1)) for hue in (350, 10)]
    stats = color.hsv_statistics(halves(*near_red))
    assert min(stats["hue_mean"], 360 - stats["hue_mean"]) < 1.0   # 0 degrees, not 180
    assert stats["saturation_mean"] == pytest.approx(1.0)
    assert math.isnan(color.hsv_statistics(solid((90, 90, 90)))["hue_mean"])


def test_dominant_colours_and_shares():
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    image.paste(solid((0, 0, 255), (8, 2)), (0, 0))   # a quarter blue
    palette = color.dominant_colors(image, k=5, seed=3)
    assert [(c["hex"], c["share"]) for c in palette] == [("#ff0000", 0.75), ("#0000ff", 0.25)]
    assert color.dominant_colors(image, k=5, seed=3) == palette   # seeded


def test_histogram_emd_by_hand():
    black, white = solid((0, 0, 0)), solid((255, 255, 255))
    assert color.histogram_emd(black, white)["emd"] == pytest.approx(255)
    assert color.histogram_emd(white, white)["emd"] == 0
    assert color.histogram_emd(black, halves((0, 0, 0), (255, 255, 255)))["emd"] == pytest.approx(127.5)
    red = color.histogram_emd(black, solid((255, 0, 0), (4, 4)))   # sizes may differ
    assert (red["emd_r"], red["emd_g"], red["emd_b"], red["emd"]) == pytest.approx((255, 0, 0, 85))


# --------------------------------------------------------------------------- faces


def grace_hopper() -> Image.Image:
    matplotlib = pytest.importorskip("matplotlib")
    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def test_face_counter_finds_one_and_two_faces():
    pytest.importorskip("cv2")
    from clipdraw.evaluate.faces import FaceCounter, first_iteration

    portrait, counter = grace_hopper(), FaceCounter()
    pair = Image.new("RGB", (portrait.width * 2, portrait.height))
    pair.paste(portrait, (0, 0))
    pair.paste(portrait, (portrait.width, 0))
    assert counter.count(portrait) == 1
    assert counter.count(pair.resize((256, 150))) == 2
    assert counter.count(solid((128, 128, 128), (256, 256))) == 0
    assert first_iteration([50, 100, 150, 200], [0, 1, 2, 1], 2) == 150
    assert first_iteration([50, 100], [0, 1], 2) is None


def test_missing_opencv_is_one_clear_line(monkeypatch):
    import builtins

    from clipdraw.evaluate import faces

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ClipdrawError, match=r"opencv-python-headless<5.*--no-faces"):
        faces.FaceCounter()


# --------------------------------------------------------------------------- datasets


@pytest.fixture
def coco_set(tmp_path):
    images = tmp_path / "val2017"
    images.mkdir()
    for name, rgb in (("000000000139.jpg", (200, 40, 40)), ("000000000285.jpg", (40, 40, 200))):
        solid(rgb, (64, 48)).save(images / name)
    document = {
        "info": {"description": "COCO 2017"},
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 48, "width": 64},
                   {"id": 285, "file_name": "000000000285.jpg", "height": 48, "width": 64},
                   {"id": 632, "file_name": "000000000632.jpg", "height": 48, "width": 64},   # not downloaded
                   {"id": 724, "file_name": "000000000724.jpg", "height": 48, "width": 64}],  # no caption
        "annotations": [{"image_id": 139, "id": 1, "caption": "A red  room with a TV."},
                        {"image_id": 285, "id": 2, "caption": "A big blue bear."},
                        {"image_id": 139, "id": 3, "caption": "A living room."},
                        {"image_id": 632, "id": 4, "caption": "A bedroom."}],
    }
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(document))
    return path, images


@pytest.fixture
def flickr_set(tmp_path):
    images = tmp_path / "flickr30k-images"
    images.mkdir()
    solid((30, 160, 30), (50, 40)).save(images / "1000092795.jpg")
    solid((160, 160, 30), (50, 40)).save(images / "10002456.jpg")
    document = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "test", "sentids": [0, 1],
         "sentences": [{"raw": "Two young guys with shaggy hair.", "tokens": ["two"], "imgid": 0, "sentid": 0},
                       {"raw": "Two men in green shirts.", "tokens": ["two"], "imgid": 0, "sentid": 1}]},
        {"filename": "10002456.jpg", "imgid": 1, "split": "train", "sentids": [2],
         "sentences": [{"raw": "Several men in hard hats.", "tokens": ["several"], "imgid": 1, "sentid": 2}]}]}
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(document))
    return path, images


def test_coco_reader(coco_set):
    path, images = coco_set
    notes = []
    items = datasets.read_coco(path, images, note=notes.append)
    assert [(i.id, i.prompt, i.gold.name) for i in items] == [
        ("coco-139", "A red room with a TV.", "000000000139.jpg"), ("coco-285", "A big blue bear.", "000000000285.jpg")]
    assert items[0].references == ["A red room with a TV.", "A living room."]
    assert notes and "skipped 1" in notes[0]
    assert len(datasets.read_coco(path, images, limit=1)) == 1


def test_flickr_reader(flickr_set):
    path, images = flickr_set
    test = datasets.read_flickr(path, images, split="test")
    assert [(i.id, i.prompt, len(i.references)) for i in test] == [("flickr-1000092795", "Two young guys with shaggy hair.", 2)]
    assert len(datasets.read_flickr(path, images, split=None)) == 2
    with pytest.raises(ClipdrawError, match=r"split 'val' \(splits present: test, train\)"):
        datasets.read_flickr(path, images, split="val")


def test_prompt_file_groups_comments_and_ids(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\n[bare]\na tree\n  a   tree \n[a photo of]\na photo of a tree\n")
    items = datasets.read_prompt_file(path)
    assert [(i.id, i.prompt, i.group) for i in items] == [
        ("a-tree", "a tree", "bare"), ("a-tree-2", "a tree", "bare"), ("a-photo-of-a-tree", "a photo of a tree", "a photo of")]
    for shipped in (ROOT / "experiments" / "prompts").glob("*.txt"):
        assert len({i.group for i in datasets.read_prompt_file(shipped)}) >= 2, shipped


BAD_FILES = [
    ("coco", "[1, 2]", "not a COCO captions file: expected an object"),
    ("coco", '{"images": []}', "'annotations' is missing or not a list"),
    ("coco", '{"images": [{"id": 1}], "annotations": []}', "images[0] lacks 'id' or a string 'file_name'"),
    ("coco", '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}', "annotations[0]"),
    ("coco", "{not json", "is not valid JSON (line 1"),
    ("flickr", '{"images": [{"filename": "a.jpg"}]}', "Karpathy's Flickr30k file"),
    ("flickr", '{"annotations": []}', "expected an object with an 'images' list"),
    ("flickr", '{"images": [{"filename": "a.jpg", "split": "test", "sentences": ["x"]}]}', "sentences[0] lacks"),
]


@pytest.mark.parametrize("kind,text,message", BAD_FILES)
def test_wrong_dataset_files_are_refused_in_one_line(tmp_path, kind, text, message):
    path = tmp_path / "data.json"
    path.write_text(text)
    reader = datasets.read_coco if kind == "coco" else datasets.read_flickr
    with pytest.raises(ClipdrawError, match=message.replace("[", r"\[").replace("(", r"\(")):
        reader(path, tmp_path)


def test_missing_images_folder_and_empty_prompt_file(tmp_path, coco_set):
    with pytest.raises(ClipdrawError, match="images folder .* does not exist"):
        datasets.read_coco(coco_set[0], tmp_path / "nowhere")
    with pytest.raises(ClipdrawError, match="none of the images listed"):
        datasets.read_coco(coco_set[0], tmp_path)   # a folder without them
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(ClipdrawError, match="holds no prompt"):
        datasets.read_prompt_file(empty)


# --------------------------------------------------------------------------- report


def test_report_is_self_contained(tmp_path):
    from clipdraw.evaluate.report import Report, write_csv

    report = Report("A <test> report")
    report.table([{"engine": "optimize", "score": 0.123456, "missing": float("nan"), "dominant": "#ff0000 #00ff00"}],
                 swatches=["dominant"])
    report.images([(solid((255, 0, 0), (64, 64)), "red"), (solid((0, 0, 255), (300, 200)), "blue & co")], label="row")
    plt = report.pyplot()
    if plt is not None:
        fig, axis = plt.subplots()
        axis.plot([0, 1], [1, 0])
        report.figure(fig)
    page = parse_page(report.write(tmp_path / "r.html"))
    assert page.headings[0] == "A <test> report"
    assert page.tables == 1 and not page.external
    assert len(page.images) == 2 + (plt is not None) and all(src.startswith("data:image/") for src in page.images)
    assert "0.1235" in page.text and "blue & co" in page.text
    rows = list(csv.DictReader(write_csv(tmp_path / "r.csv", [{"a": 1, "b": float("nan")}, {"a": 2, "c": "x"}]).open()))
    assert rows == [{"a": "1", "b": "", "c": ""}, {"a": "2", "b": "", "c": "x"}]


# --------------------------------------------------------------------------- commands on the toy world


def test_score_command_with_the_toy_clip(tmp_path, capsys):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    halves((240, 240, 240), (220, 30, 30), 32).save(red)
    halves((240, 240, 240), (30, 30, 220), 32).save(blue)
    assert run_main("score", red, blue, "--text", "a red circle", "--text", "a blue square",
                    "--eval-model", "toy", "--json", "--device", "cpu") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["judge"]["name"] == "toy" and result["notes"] == []
    rows = {(Path(r["image"]).name, r["text"]): r for r in result["rows"]}
    assert len(rows) == 4
    for image in ("red.png", "blue.png"):
        assert sum(rows[image, t]["p_text_given_image"] for t in ("a red circle", "a blue square")) == pytest.approx(1)
    for text in ("a red circle", "a blue square"):
        assert sum(rows[i, text]["p_image_given_text"] for i in ("red.png", "blue.png")) == pytest.approx(1)
    for row in rows.values():
        assert row["clip_score"] == pytest.approx(2.5 * max(row["cosine_x100"] / 100, 0))
    assert run_main("score", red, "--text", "a red circle", "--eval-model", "toy", "--csv", "--device", "cpu") == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert table[0]["text"] == "a red circle" and table[0]["judge_is_guide"] == "False"


def test_score_with_a_checkpoint_path_and_the_guide_note(tmp_path, capsys, tiny_files):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    solid((10, 200, 10), (32, 32)).save(run_dir / "final.png")
    (run_dir / "run.json").write_text(json.dumps({"engine": "optimize", "models": {"clip": {
        "name": str(tiny_files["clip"]), "path": str(tiny_files["clip"])}}}))
    assert run_main("score", run_dir / "final.png", "--text", "green", "--eval-model", tiny_files["clip"],
                    "--device", "cpu", "--offline") == 0
    out = capsys.readouterr().out
    assert "judge_is_guide" in out.splitlines()[0]
    assert "note:" in out and "optimized against" in out and "not independent" in out


def test_color_command(tmp_path, capsys):
    black, white = tmp_path / "black.png", tmp_path / "white.png"
    solid((0, 0, 0), (16, 16)).save(black)
    solid((255, 255, 255), (16, 16)).save(white)
    assert run_main("color", black, white, "--reference", white, "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["emd"] for r in rows] == [pytest.approx(255), 0]
    assert rows[0]["dominant"] == [{"rgb": [0, 0, 0], "hex": "#000000", "share": 1.0}]
    assert run_main("color", black, "--colors", "2") == 0
    assert "#000000:100%" in capsys.readouterr().out


def test_probe_on_the_toy_world_then_resume(tmp_path, capsys):
    out = tmp_path / "probe"
    args = ["probe", TOY_ENTITIES, "--model", "toy", "--templates", "a {}", "--templates", "{}", "--iters", "4",
            "--save-every", "2", "--cutn", "2", "--eval-model", "toy", "--out", out, "--device", "cpu", "--quiet"]
    assert run_main(*args) == 0
    assert "report:" in capsys.readouterr().out
    summary = list(csv.DictReader((out / "probe_summary.csv").open()))
    assert len(summary) == 4 * 2
    assert {r["entity"] for r in summary} == {"red circle", "blue square", "green triangle", "yellow square"}
    frames = list(csv.DictReader((out / "probe_frames.csv").open()))
    assert len(frames) == 8 * 3 and {r["iteration"] for r in frames} == {"0", "2", "4"}   # 0: the blank canvas
    for row in frames:
        assert 0 <= float(row["p_entity"]) <= 1 and row["identified"] in ("True", "False")
    page = parse_page(out / "probe.html")
    text = " ".join(page.text)
    assert "Summary per entity and template" in page.headings and "Frames" in page.headings
    assert "guided the optimizer" in text   # toy guides and judges
    assert not page.external and len(page.images) >= 8 * 2   # two frames per run at least
    record = json.loads((out / "probe.json").read_text())
    assert record["judge"]["name"] == "toy" and len(record["runs"]) == 8
    finished = sorted(out.glob("runs/optimize/*/seed-0/run.json"))
    stamps = [p.stat().st_mtime_ns for p in finished]
    assert run_main(*args) == 0   # everything finished: nothing is generated again
    assert "8 of 8 run(s) already finished" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in finished] == stamps


def test_compare_prompt_file_on_the_toy_world(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("[single]\na red circle\na blue square\n[relation]\na red circle above a blue square\n"
                       "a green square below a yellow triangle\n")
    out = tmp_path / "cmp"
    assert run_main("compare", prompts, "--model", "toy", "--engines", "optimize,transformer", "--iters", "3",
                    "--cutn", "2", "--out", out, "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert len(rows) == 4 * 2 and {r["engine"] for r in rows} == {"optimize", "transformer"}
    for row in rows:
        assert row["pool"] == "2"   # own caption + the other one of its group
        assert row["candidates"] == "2" and row["r_precision"] in ("0.0", "1.0")
        assert row["gold_cosine_x100"] == "" and float(row["seconds_per_image"]) > 0
    summary = list(csv.DictReader((out / "compare_summary.csv").open()))
    assert [(r["engine"], r["group"]) for r in summary] == [
        ("optimize", ""), ("transformer", ""), ("optimize", "single"), ("transformer", "single"),
        ("optimize", "relation"), ("transformer", "relation")]
    page = parse_page(out / "compare.html")
    assert {"Summary per engine", "Per engine and group", "Images"} <= set(page.headings)
    assert len([s for s in page.images if s.startswith("data:image/jpeg")]) == 8


def test_compare_coco_and_flickr_with_gold_images(tmp_path, coco_set, flickr_set):
    out = tmp_path / "coco"
    assert run_main("compare", "--coco", coco_set[0], "--images", coco_set[1], "--model", "toy", "--engines",
                    "transformer", "--out", out, "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert sorted(r["engine"] for r in rows) == ["gold", "gold", "transformer", "transformer"]
    for row in rows:
        assert row["gold_cosine_x100"] != "" and row["candidates"] == "2"
        if row["engine"] == "transformer":
            assert float(row["emd_to_gold"]) > 0 and row["beats_gold"] in ("True", "False")
    out = tmp_path / "flickr"
    assert run_main("compare", "--flickr", flickr_set[0], "--images", flickr_set[1], "--split", "all", "--limit", "1",
                    "--model", "toy", "--engines", "transformer", "--out", out, "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert {r["item"] for r in rows} == {"flickr-1000092795"}


def test_ctrl_c_keeps_finished_runs_and_resumes(tmp_path, capsys, monkeypatch):
    import clipdraw.engines.optimize

    real_generate, calls = clipdraw.engines.optimize.generate, []

    def interrupted_second_time(models, prompt, config, on_frame=None, progress=True):
        calls.append(prompt)
        result = real_generate(models, prompt, config, on_frame=on_frame, progress=progress)
        if len(calls) == 2:   # frames of this run are on disk: the interruption must remove them
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(clipdraw.engines.optimize, "generate", interrupted_second_time)   # the engine's own name for it
    out = tmp_path / "probe"
    args = ["probe", TOY_ENTITIES, "--model", "toy", "--templates", "a {}", "--iters", "2", "--save-every", "1",
            "--cutn", "2", "--no-faces", "--out", out, "--device", "cpu", "--quiet"]
    assert run_main(*args) == 130
    assert len([line for line in capsys.readouterr().err.splitlines() if "interrupted" in line]) == 1
    assert len(list(out.glob("runs/*/*/*/run.json"))) == 1
    assert len(list(out.glob("runs/*/*/*"))) == 1   # the partial run folder is gone
    record = json.loads((out / "probe.json").read_text())
    assert len(record["runs"]) == 1 and any("Only 1 of 4" in n for n in record["notes"])
    assert run_main(*args) == 0
    assert len(calls) == 2 + 3   # the finished run was not redone
    assert len(list(out.glob("runs/*/*/*/run.json"))) == 4


def test_default_command_still_generates(tmp_path):
    assert run_main("a red circle", "--model", "toy", "--iters", "2", "--cutn", "2", "--seed", "0", "--no-gif",
                    "--out", tmp_path / "runs", "--quiet", "--device", "cpu") == 0
    assert (tmp_path / "runs" / "a-red-circle-0" / "final.png").is_file()


# --------------------------------------------------------------------------- bad input


def assert_one_line(capsys, code, pattern):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("clipdraw: error:") and pattern in err[0], err


def test_bad_experiment_input(tmp_path, capsys, coco_set):
    out = tmp_path / "out"
    empty = tmp_path / "nobody.txt"
    empty.write_text("# nobody\n")
    one = tmp_path / "one.txt"
    one.write_text("Albert Einstein\n")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"images": {}, "annotations": []}')
    cases = [
        (["probe", empty], "names no entity"),
        (["probe", one], "give at least two"),
        (["probe", TOY_ENTITIES, "--templates", "a photo of"], "needs exactly one {}"),
        (["probe", TOY_ENTITIES, "--model", "toy", "--engine", "dallemini"], "leave out --model toy"),
        (["probe", TOY_ENTITIES, "--eval-model", "ViT-Z/99"], "unknown CLIP model"),
        (["compare", "--coco", wrong, "--images", coco_set[1]], "'images' is missing or not a list"),
        (["compare", "--coco", coco_set[0], "--images", tmp_path / "nowhere"], "does not exist or is not a folder"),
        (["compare", "--coco", coco_set[0]], "needs --images DIR"),
        (["compare"], "give one prompt source"),
        (["compare", TOY_ENTITIES, "--model", "toy", "--split", "val"], "--split picks a part of --flickr's captions"),
        (["compare", "--coco", coco_set[0], "--images", coco_set[1], "--split", "val"], "does not go with --coco"),
        (["compare", TOY_ENTITIES, "--model", "toy", "--engines", "optimize,magic"], "unknown engine 'magic'"),
        (["compare", TOY_ENTITIES, "--engines", "transformer"], "needs --model toy"),
        (["compare", TOY_ENTITIES, "--engines", "optimize", "--offline"], "CLIP model ViT-B/32 is not in the cache"),
        (["compare", TOY_ENTITIES, "--model", "toy", "--clip-model", "ViT-B/16"], "--clip-model names a real model"),
        (["probe", TOY_ENTITIES, "--model", "toy", "--decoder", "openai"], "--decoder names a real model"),
        (["batch", TOY_ENTITIES, "--model", "toy", "--clip-model", "RN50"], "--clip-model names a real model"),
        (["color", tmp_path / "absent.png"], "does not exist"),
    ]
    for args, pattern in cases:
        assert_one_line(capsys, run_main(*args, "--out", out) if args[0] != "color" else run_main(*args), pattern)
    assert not out.exists()


def test_resuming_with_other_settings_is_refused_but_another_judge_is_not(tmp_path, capsys, tiny_files):
    out = tmp_path / "cmp"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    base = ["compare", prompts, "--model", "toy", "--engines", "transformer", "--out", out, "--device", "cpu", "-q"]
    assert run_main(*base) == 0
    capsys.readouterr()
    # an optimizer setting for a transformer-only experiment is refused, not recorded (the toy
    # defaults' resume rule: EngineSettings.record, tested below)
    assert_one_line(capsys, run_main(*base, "--iters", "5"), "--iters is not used by --engine transformer")
    assert_one_line(capsys, run_main(*base, "--transformer", tmp_path), "no transformer.safetensors")
    assert (out / "compare.html").is_file()
    run_json = out / "runs" / "transformer" / "a-red-circle" / "seed-0" / "run.json"
    stamp = run_json.stat().st_mtime_ns
    assert run_main(*base, "--eval-model", tiny_files["clip"]) == 0   # re-judged, not regenerated
    assert run_json.stat().st_mtime_ns == stamp
    assert json.loads((out / "compare.json").read_text())["judge"]["path"] == str(tiny_files["clip"])


def test_unreadable_image_is_one_line_and_exit_2_in_a_real_process(tmp_path):
    fake = tmp_path / "broken.png"
    fake.write_text("not a png")
    result = subprocess.run([sys.executable, "-m", "clipdraw", "score", str(fake), "--text", "a cat",
                             "--eval-model", "toy"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CLIPDRAW_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipdraw: error: cannot read image") and "broken.png" in lines[0]


def test_compare_with_real_model_files_notes_a_judge_that_guided(tmp_path, tiny_files):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")   # captions the toy judge reads: still no verdict here
    out = tmp_path / "cmp"
    assert run_main("compare", prompts, "--engines", "optimize", "--clip-model", tiny_files["clip"], "--decoder",
                    tiny_files["decoder"], "--eval-model", tiny_files["clip"], "--size", "32", "--iters", "2",
                    "--cutn", "2", "--offline", "--out", out, "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert len(rows) == 2 and all(r["judge_is_guide"] == "True" for r in rows)
    assert "guided the optimizer" in " ".join(parse_page(out / "compare.html").text)
    # a real-world report carries no analytic verdict
    assert "verdict" not in rows[0] and "judge_success" not in next(csv.DictReader((out / "compare_summary.csv").open()))


def test_compare_through_the_dallemini_engine(tmp_path, monkeypatch):
    if importlib.util.find_spec("min_dalle") is None:   # not importorskip: importing min_dalle turns autograd off
        pytest.skip("min-dalle is not installed")
    import tiny_models
    from clipdraw.engines.dallemini import DalleMiniEngine

    if not hasattr(tiny_models, "save_tiny_dallemini"):
        pytest.skip("no tiny dalle-mini in tests/tiny_models.py")
    root = tiny_models.save_tiny_dallemini(tmp_path / "cache")
    monkeypatch.setenv("CLIPDRAW_CACHE", str(root))
    real_load = DalleMiniEngine.from_files.__func__

    def load_with_a_cheap_vqgan(cls, *args, **kwargs):   # the real VQGAN decoder takes seconds per image on a CPU
        engine = real_load(cls, *args, **kwargs)
        engine.model.detokenizer.decoder = tiny_models.CheapVQGanDecoder()
        return engine

    monkeypatch.setattr(DalleMiniEngine, "from_files", classmethod(load_with_a_cheap_vqgan))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "cmp"
    assert run_main("compare", prompts, "--engines", "dallemini", "--eval-model", "toy", "--offline", "--out", out,
                    "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert [r["engine"] for r in rows] == ["dallemini", "dallemini"]
    assert all(float(r["seconds_per_image"]) > 0 for r in rows)
    assert json.loads((out / "runs" / "dallemini" / "a-red-circle" / "seed-0" / "run.json").read_text())["engine"] \
        == "dallemini"


# --------------------------------------------------------------------------- run folders named from user data


def tree(root: Path, skip: Path) -> dict:
    """Every path under ``root`` outside ``skip``, with the bytes of each file."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        found[str(path.relative_to(root))] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return found


HOSTILE = "x/../../../../../victim"   # from <out>/runs/<engine>/coco-x, five levels up is beside <out>'s parent


@pytest.mark.parametrize("kind", ["coco", "flickr"])
def test_dataset_ids_cannot_lead_run_folders_out_of_out(tmp_path, capsys, kind):
    """The reported attack, run twice through the CLI: before the fix the first run ended in a
    FileExistsError traceback and the second deleted <tmp>/a/victim/seed-0 and wrote its run there."""
    images = tmp_path / "images"
    images.mkdir()
    if kind == "coco":
        solid((200, 40, 40), (32, 32)).save(images / "x.jpg")
        source = tmp_path / "captions.json"
        source.write_text(json.dumps({"images": [{"id": HOSTILE, "file_name": "x.jpg"}],
                                      "annotations": [{"image_id": HOSTILE, "caption": "a red circle"}]}))
        args = ["--coco", source]
    else:   # a stem cannot hold '/', but '\' is a separator on Windows and '..' a name everywhere
        name = "..\\..\\..\\..\\..\\victim.jpg"
        solid((200, 40, 40), (32, 32)).save(images / name)
        source = tmp_path / "dataset_flickr30k.json"
        source.write_text(json.dumps({"images": [{"filename": name, "split": "test",
                                                  "sentences": [{"raw": "a red circle"}]}]}))
        args = ["--flickr", source]
    sentinel = tmp_path / "a" / "victim" / "seed-0"
    sentinel.mkdir(parents=True)
    (sentinel / "precious.txt").write_text("keep me")
    out = tmp_path / "a" / "b" / "out"
    out.parent.mkdir()
    before = tree(tmp_path, out)
    for attempt in range(2):
        assert run_main("compare", *args, "--images", images, "--model", "toy", "--engines", "transformer",
                        "--out", out, "--device", "cpu", "--quiet") == 0, capsys.readouterr().err
        assert (sentinel / "precious.txt").read_text() == "keep me"
        assert tree(tmp_path, out) == before   # nothing written, moved or deleted outside --out
    assert "1 of 1 run(s) already finished" in capsys.readouterr().err   # the second run resumed the first
    folders = [p.parent for p in (out / "runs" / "transformer").glob("*/seed-0")]
    assert len(folders) == 1 and (folders[0] / "seed-0" / "final.png").is_file()
    assert re.fullmatch(rf"{kind}-[a-z0-9-]*victim-[0-9a-f]{{12}}", folders[0].name), folders[0].name
    assert [r["item"] for r in csv.DictReader((out / "compare_images.csv").open())] == [folders[0].name] * 2


def test_safe_name_keeps_plain_ids_and_makes_others_one_distinct_name():
    from clipdraw.outputs import SAFE_NAME, safe_name

    for plain in ("coco-139", "flickr-1000092795", "a_b.c-D"):
        assert safe_name(plain) == plain
    hostile = [HOSTILE, "x\\..\\victim", "..", ".", "", ".hidden", "a.", "/etc/passwd", "a\0b", "\ud800",
               "x" * 500, "x" * 500 + "y", "a/b", "a?b", "a b", "A B", "a-b"]
    names = [safe_name(text) for text in hostile]
    for text, name in zip(hostile, names):
        assert SAFE_NAME.fullmatch(name) and len(name) <= 80 and name not in (".", ".."), (text, name)
    assert len(set(names)) == len(names)   # distinct ids never share a folder
    assert safe_name("x" * 30, max_length=20) != "x" * 30 and len(safe_name("x" * 30, max_length=20)) <= 20


def test_ids_that_slug_alike_get_distinct_folders(tmp_path):
    from clipdraw.evaluate import probe
    from clipdraw.outputs import unique_names

    assert unique_names(["a-b", "a-b", "a-b-2", "c"]) == ["a-b", "a-b-3", "a-b-2", "c"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a b\na-b\na b 2\n")
    assert [i.id for i in datasets.read_prompt_file(prompts)] == ["a-b", "a-b-3", "a-b-2"]
    keys = [s.key for s in probe.plan(["Einstein!", "einstein"], ["a photo of {}"], 2, "optimize")]
    assert len(set(keys)) == 4
    images = tmp_path / "images"
    images.mkdir()
    solid((1, 2, 3)).save(images / "x.jpg")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}, {"id": "1", "file_name": "x.jpg"}],
                                    "annotations": [{"image_id": 1, "caption": "one"},
                                                    {"image_id": "1", "caption": "the string one"}]}))
    assert [i.id for i in datasets.read_coco(captions, images)] == ["coco-1", "coco-1-2"]
    captions.write_text(json.dumps({"images": [{"id": [1], "file_name": "x.jpg"}], "annotations": []}))
    with pytest.raises(ClipdrawError, match=r"images\[0\] lacks 'id'"):
        datasets.read_coco(captions, images)


class NoEngines:
    def get(self, name):
        raise AssertionError("a refused batch must not load an engine")


def test_run_folder_guard_refuses_anything_not_strictly_inside_out(tmp_path):
    from clipdraw.evaluate.runs import RunSpec, execute, run_folder

    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    victim = tmp_path / "a" / "victim" / "seed-0"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    assert run_folder(out, "optimize/coco-139/seed-0") == out / "runs" / "optimize" / "coco-139" / "seed-0"
    for key in ("optimize/coco-x/../../../../victim/seed-0", "../victim/seed-0", "..", ".", "", "a//b", "a/./b",
                str(victim), "a\\..\\..\\b", "a\0b"):
        with pytest.raises(ClipdrawError, match="not a plain relative path"):
            run_folder(out, key)
        with pytest.raises(ClipdrawError):   # before any run folder is read, created or deleted
            execute([RunSpec("optimize/ok/seed-0", "optimize", "ok", 0), RunSpec(key, "optimize", "x", 0)],
                    out, NoEngines(), keep_frames=False, progress=False, log=lambda _: None)
        assert (victim / "precious.txt").read_text() == "keep me"
        assert not (out / "runs").exists()
    (out / "runs").mkdir()
    (out / "runs" / "optimize").symlink_to(tmp_path / "a", target_is_directory=True)   # a link out of --out
    with pytest.raises(ClipdrawError, match="outside .* refusing to create or delete it"):
        run_folder(out, "optimize/victim/seed-0")
    with pytest.raises(ClipdrawError, match="outside"):
        execute([RunSpec("optimize/victim/seed-0", "optimize", "x", 0)], out, NoEngines(), keep_frames=False,
                progress=False, log=lambda _: None)
    assert (victim / "precious.txt").read_text() == "keep me"
    (out / "runs" / "optimize").unlink()
    (out / "runs" / "optimize").symlink_to(out, target_is_directory=True)   # --out itself is not a run folder
    with pytest.raises(ClipdrawError, match="outside"):
        run_folder(out, "optimize")


def test_symbolic_links_out_of_out_are_refused_by_the_cli_and_inside_ones_not_followed(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "a-red-circle" / "seed-0").mkdir(parents=True)
    (elsewhere / "a-red-circle" / "seed-0" / "precious.txt").write_text("keep me")
    out = tmp_path / "cmp"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "transformer").symlink_to(elsewhere, target_is_directory=True)
    base = ["compare", prompts, "--model", "toy", "--engines", "transformer", "--out", out, "--device", "cpu", "-q"]
    assert_one_line(capsys, run_main(*base), "refusing to create or delete it")
    assert [p.name for p in (elsewhere / "a-red-circle" / "seed-0").iterdir()] == ["precious.txt"]
    # a left-over link inside --out, in place of the run folder: the link goes, not what it points to
    (out / "runs" / "transformer").unlink()
    (out / "runs" / "transformer").mkdir()
    kept = out / "kept"
    kept.mkdir()
    (kept / "precious.txt").write_text("keep me")
    (out / "runs" / "transformer" / "a-red-circle").mkdir()
    (out / "runs" / "transformer" / "a-red-circle" / "seed-0").symlink_to(kept, target_is_directory=True)
    assert run_main(*base) == 0
    run_dir = out / "runs" / "transformer" / "a-red-circle" / "seed-0"
    assert not run_dir.is_symlink() and (run_dir / "final.png").is_file()
    assert [p.name for p in kept.iterdir()] == ["precious.txt"]


# --------------------------------------------------------------------------- the toy world's analytic judge in reports


def toy_scene_image(caption: str) -> Image.Image:
    """A clean render of a one-object scene of the toy world ("a red circle")."""
    from clipdraw.toy.data import Scene, Shape, render

    _, color_name, shape = caption.split()
    return Image.fromarray(render(Scene("single", (Shape(shape, color_name, "large", 32, 32),), caption)))


def sees(path) -> str:
    """What the analytic judge, called directly, sees on a saved image."""
    from clipdraw.toy.judge import describe

    return describe(np.asarray(Image.open(path).convert("RGB")))


def expected_verdict(caption: str, path) -> str:
    """The analytic judge's verdict, called directly on a saved image, as the CSV writes it."""
    from clipdraw.toy.judge import parse_caption, satisfies

    try:
        parse_caption(caption)
    except ValueError:
        return ""
    return "accepted" if satisfies(caption, np.asarray(Image.open(path).convert("RGB"))) else "rejected"


def test_toy_verdicts_and_success_rate_by_hand():
    from clipdraw.evaluate.judge import ToyVerdicts, success_rate

    verdicts, red = ToyVerdicts(), toy_scene_image("a red circle")
    assert verdicts("a red circle", red) == ("accepted", "a large red circle")
    assert verdicts("a blue square", red) == ("rejected", "a large red circle")
    assert verdicts("Albert Einstein", red) == (None, "a large red circle")   # cannot parse: no verdict, no crash
    assert verdicts(None, solid((240, 240, 240), (64, 64))) == (None, "nothing found")
    assert success_rate(["accepted", "rejected", None, "accepted"]) == (pytest.approx(2 / 3), 3)
    assert success_rate([None, None]) == (None, 0)


def test_wilson_interval_holds_the_share_and_narrows_with_more_images():
    from clipdraw.evaluate.judge import judged_summary, wilson_interval

    assert wilson_interval(0, 0) == (None, None)
    with pytest.raises(ValueError):
        wilson_interval(7, 6)
    for trials in (1, 6, 20, 80):
        for successes in range(trials + 1):
            low, high = wilson_interval(successes, trials)
            assert 0 <= low <= successes / trials <= high <= 1
            mirrored = wilson_interval(trials - successes, trials)   # accepted and rejected trade places
            assert mirrored == (pytest.approx(1 - high), pytest.approx(1 - low))
    assert wilson_interval(0, 20)[1] > 0 and wilson_interval(20, 20)[0] < 1   # not empty at the ends
    z = 1.96   # at 0 of n the upper end solves n p = z sqrt(n p (1 - p)): p = z^2 / (n + z^2)
    assert wilson_interval(0, 20)[1] == pytest.approx(z * z / (20 + z * z))
    widths = [high - low for low, high in (wilson_interval(n // 2, n) for n in (6, 20, 80, 320))]
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 5
    assert wilson_interval(3, 6, z=1.0)[1] < wilson_interval(3, 6)[1]   # a lower confidence: a narrower interval
    summary = judged_summary(["accepted", "rejected", None, "accepted"])
    assert (summary["judge_success"], summary["judged"]) == (pytest.approx(2 / 3), 3)
    assert (summary["judge_success_low"], summary["judge_success_high"]) == wilson_interval(2, 3)
    assert judged_summary([None]) == {"judge_success": None, "judge_success_low": None, "judge_success_high": None,
                                      "judged": 0}


def test_compare_summary_gives_the_judge_success_rate_per_engine_and_group(tmp_path):
    """analyze and summarize on images whose verdicts are known: clean renders of the toy world."""
    from clipdraw.evaluate import compare
    from clipdraw.evaluate.judge import Judge, ToyVerdicts

    prompts = tmp_path / "p.txt"
    prompts.write_text("[single]\na red circle\na blue square\n[odd]\na portrait of Albert Einstein\n")
    items = datasets.read_prompt_file(prompts)
    specs = compare.plan(items, ["optimize", "transformer"], 1)
    out, records = tmp_path / "cmp", {}
    for spec in specs:   # optimize draws a red circle for every prompt, transformer a blue square
        run_dir = out / "runs" / spec.key
        run_dir.mkdir(parents=True)
        toy_scene_image("a red circle" if spec.engine == "optimize" else "a blue square").save(run_dir / "final.png")
        records[spec.key] = {"seconds": 1.0}
    rows = compare.analyze(items, specs, records, out, Judge.load("toy-judge"), ToyVerdicts())
    verdicts = {(r["engine"], r["prompt"]): (r["verdict"], r["sees"]) for r in rows}
    assert verdicts == {
        ("optimize", "a red circle"): ("accepted", "a large red circle"),
        ("optimize", "a blue square"): ("rejected", "a large red circle"),
        ("optimize", "a portrait of Albert Einstein"): (None, "a large red circle"),
        ("transformer", "a red circle"): ("rejected", "a large blue square"),
        ("transformer", "a blue square"): ("accepted", "a large blue square"),
        ("transformer", "a portrait of Albert Einstein"): (None, "a large blue square")}
    for row in compare.summarize(rows):
        assert (row["judge_success"], row["judged"]) == (0.5, 2)
        assert row["judge_success_low"] < 0.5 < row["judge_success_high"]   # 1 of 2: wide either way
    by_group = {(r["engine"], r["group"]): (r["judge_success"], r["judged"]) for r in compare.summarize(rows, True)}
    assert by_group == {("optimize", "single"): (0.5, 2), ("transformer", "single"): (0.5, 2),
                        ("optimize", "odd"): (None, 0), ("transformer", "odd"): (None, 0)}
    # outside the toy world: no verdict anywhere
    plain = compare.analyze(items, specs, records, out, Judge.load("toy-judge"))
    assert not any("verdict" in r for r in plain) and "judge_success" not in compare.summarize(plain)[0]


def test_toy_compare_reports_the_analytic_judges_verdict(tmp_path, capsys):
    from clipdraw.config import TOY_DEFAULTS

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("[single]\na red circle\na blue square\n[other]\nsomething the judge cannot read\n")
    out = tmp_path / "cmp"
    assert run_main("compare", prompts, "--model", "toy", "--engines", "optimize,transformer", "--iters", "2",
                    "--cutn", "2", "--out", out, "--device", "cpu", "--quiet") == 0
    rows = list(csv.DictReader((out / "compare_images.csv").open()))
    assert len(rows) == 6 and {"verdict", "sees"} <= set(rows[0])
    for row in rows:   # the verdict is the analytic judge's on the saved final.png
        assert row["verdict"] == expected_verdict(row["prompt"], row["file"]), row
        assert row["sees"] == sees(row["file"])
    assert [r["verdict"] for r in rows if r["group"] == "other"] == ["", ""]   # no verdict, no crash
    record = json.loads((out / "compare.json").read_text())
    for summary in record["summary"]:
        mine = [r["verdict"] for r in rows if r["engine"] == summary["engine"] and r["verdict"]]
        assert summary["judged"] == 2 and summary["judge_success"] == pytest.approx(mine.count("accepted") / 2)
    assert {(s["engine"], s["group"], s["judged"]) for s in record["group_summary"]} == {
        ("optimize", "single", 2), ("transformer", "single", 2), ("optimize", "other", 0), ("transformer", "other", 0)}
    summary_csv = list(csv.DictReader((out / "compare_summary.csv").open()))
    assert {"judge_success", "judge_success_low", "judge_success_high", "judged"} <= set(summary_csv[0])
    for row in summary_csv:   # the interval holds the share
        if row["judged"] != "0":
            assert float(row["judge_success_low"]) <= float(row["judge_success"]) <= float(row["judge_success_high"])
    # judged by the toy judge CLIP, which never guided, by default; the report says so
    assert record["judge"]["name"] == "toy-judge" and record["judge"]["path"].endswith("judge.safetensors")
    assert not any(r["judge_is_guide"] == "True" for r in rows) and record["notes"] == []
    text = " ".join(parse_page(out / "compare.html").text)
    assert "Analytic judge" in text and ("judge ✓" in text or "judge ✗" in text)
    assert text.count("toy-judge") >= 1 and "Judging CLIP:" not in text   # said once, in the settings table
    # the optimizer ran at the toy world's defaults, with the two settings given
    settings = json.loads((out / "runs" / "optimize" / "a-red-circle" / "seed-0" / "run.json").read_text())["settings"]
    for key, value in TOY_DEFAULTS.items():
        assert settings[key] == {"iters": 2, "cutn": 2}.get(key, value), key
    assert json.loads((out / "experiment.json").read_text())["settings"]["save_every"] == TOY_DEFAULTS["save_every"]


class FixedClip:
    """A judging CLIP stand-in that always picks the list's first entity."""

    logit_scale = 100.0

    def embed_texts(self, texts):
        return np.eye(len(texts))

    def embed_images(self, images):
        return np.array([[1.0, 0.0, 0.0] for _ in images])

    def same_as(self, clip_info):
        return False


def test_probe_identification_requires_the_analytic_judges_acceptance_in_the_toy_world(tmp_path):
    from clipdraw.evaluate import probe
    from clipdraw.evaluate.judge import ToyVerdicts

    entities = ["red circle", "blue square", "Albert Einstein"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    toy_scene_image("a red circle").save(run_dir / "frame_000001.png")
    solid((200, 200, 230), (64, 64)).save(run_dir / "frame_000002.png")   # a faint lavender nothing
    solid((200, 200, 230), (64, 64)).save(run_dir / "final.png")
    record = {"frames": [{"iteration": 1, "file": "frame_000001.png", "similarity": 0.3},
                         {"iteration": 2, "file": "frame_000002.png", "similarity": 0.4}],
              "final": {"iteration": 2, "similarity": 0.4}, "iterations_done": 2}
    spec = probe.plan(entities, ["a photo of {}"], 1, "optimize")[0]
    assert spec.prompt == "a photo of red circle"   # outside the judge's grammar: it judges "a red circle"
    row, frames = probe.analyze_run(spec, record, run_dir, entities, FixedClip(), None, {}, ToyVerdicts())
    assert [f["clip_identified"] for f in frames] == [True, True]   # the CLIP names the entity on both frames
    assert [f["verdict"] for f in frames] == ["accepted", "rejected"]
    assert [f["identified"] for f in frames] == [True, False]
    assert (row["verdict_caption"], row["verdict"], row["sees"]) == ("a red circle", "rejected", "nothing found")
    assert row["clip_identified"] and not row["identified"] and row["first_identified"] == 1
    summary = probe.summarize([row], entities, ["a photo of {}"])[0]
    assert (summary["identified"], summary["clip_identified"], summary["judge_success"]) == (0.0, 1.0, 0.0)
    # without the toy world, identification is the CLIP's alone, as before
    row, frames = probe.analyze_run(spec, record, run_dir, entities, FixedClip(), None, {})
    assert row["identified"] and [f["identified"] for f in frames] == [True, True] and "verdict" not in row
    # an entity the judge cannot read: no verdict, identification stays the CLIP's
    einstein = [s for s in probe.plan(entities, ["a photo of {}"], 1, "optimize") if s.meta["entity"] == "Albert Einstein"][0]
    row, _ = probe.analyze_run(einstein, record, run_dir, entities, FixedClip(), None, {}, ToyVerdicts())
    assert row["verdict"] is None and row["verdict_caption"] is None and row["identified"] == row["clip_identified"]
    # the run's result is final.png's frame (run.json's final iteration), not always the last one
    record["final"]["iteration"] = 1
    toy_scene_image("a red circle").save(run_dir / "final.png")
    row, _ = probe.analyze_run(spec, record, run_dir, entities, FixedClip(), None, {}, ToyVerdicts())
    assert (row["result_iteration"], row["verdict"], row["identified"]) == (1, "accepted", True)


def test_toy_probe_reports_verdicts_on_final_png(tmp_path):
    from clipdraw.evaluate.judge import wilson_interval

    entities = tmp_path / "entities.txt"
    entities.write_text("red circle\nblue square\nAlbert Einstein\n")
    out = tmp_path / "probe"
    assert run_main("probe", entities, "--model", "toy", "--templates", "a photo of {}", "--iters", "2",
                    "--save-every", "1", "--cutn", "2", "--no-faces", "--out", out, "--device", "cpu",
                    "--quiet") == 0
    runs = list(csv.DictReader((out / "probe_runs.csv").open()))
    assert len(runs) == 3 and {"verdict", "sees", "verdict_caption", "clip_identified"} <= set(runs[0])
    for run in runs:
        run_dir = Path(run["run_dir"])
        caption = run["verdict_caption"]
        assert caption == {"red circle": "a red circle", "blue square": "a blue square"}.get(run["entity"], "")
        assert run["verdict"] == (expected_verdict(caption, run_dir / "final.png") if caption else "")
        assert run["identified"] == str(run["clip_identified"] == "True" and run["verdict"] in ("", "accepted"))
        assert int(run["result_iteration"]) == json.loads((run_dir / "run.json").read_text())["final"]["iteration"]
    frames = list(csv.DictReader((out / "probe_frames.csv").open()))
    for frame in frames:
        assert frame["identified"] == str(frame["clip_identified"] == "True" and frame["verdict"] in ("", "accepted"))
    record = json.loads((out / "probe.json").read_text())
    for summary in record["summary"]:
        judged = [r["verdict"] for r in runs if r["entity"] == summary["entity"] and r["verdict"]]
        assert summary["judged"] == len(judged)
        assert summary["judge_success"] == (judged.count("accepted") / len(judged) if judged else None)
        assert (summary["judge_success_low"], summary["judge_success_high"]) == \
            (wilson_interval(judged.count("accepted"), len(judged)) if judged else (None, None))
    assert record["judge"]["name"] == "toy-judge"
    text = " ".join(parse_page(out / "probe.html").text)
    assert "AND the analytic judge accepts it" in text
    assert text.count("toy-judge") >= 1 and "Judging CLIP:" not in text   # said once, in the settings table


def test_the_default_judging_clip_of_toy_runs_is_the_toy_judge(tmp_path, capsys, monkeypatch):
    import clipdraw.toy.models
    from clipdraw.evaluate.commands import _eval_model

    monkeypatch.delenv("CLIPDRAW_TOY_WEIGHTS", raising=False)
    from clipdraw.evaluate.judge import Judge, check_eval_model

    real_load, loaded = clipdraw.toy.models.load_toy_clip, []

    def spy(root=None, name="clip"):
        loaded.append(name)
        return real_load(root, name)

    monkeypatch.setattr(clipdraw.toy.models, "load_toy_clip", spy)

    assert _eval_model(None, "toy") == "toy-judge" and _eval_model(None, "openai") == "ViT-L/14"
    assert _eval_model("toy", "toy") == "toy"   # "toy" still means the guiding CLIP
    check_eval_model("toy-judge", offline=True)
    judge, guide = Judge.load("toy-judge"), Judge.load("toy")
    assert (judge.name, Path(judge.path).name, Path(guide.path).name) == ("toy-judge", "judge.safetensors",
                                                                          "clip.safetensors")
    assert loaded == ["judge", "clip"] and "never guides" in judge.description
    assert "CLIPDRAW_TOY_WEIGHTS" not in judge.description   # the shipped weights: no folder named
    picture = [toy_scene_image("a red circle")]
    assert not judge.same_as({"name": "toy", "path": guide.path}) and guide.same_as({"name": "toy", "path": guide.path})
    red = tmp_path / "red.png"
    picture[0].save(red)
    assert run_main("score", red, "--text", "a red circle", "--eval-model", "toy-judge", "--json", "--device",
                    "cpu") == 0
    assert json.loads(capsys.readouterr().out)["judge"]["name"] == "toy-judge"


def test_experiment_settings_fall_back_to_each_worlds_defaults():
    from clipdraw.config import TOY_DEFAULTS
    from clipdraw.evaluate.commands import _settings
    from clipdraw.evaluate.engines import EngineSettings

    def settings(kind, model, **given):
        values = {k: given.get(k) for k in ("iters", "save_every", "cutn", "size", "lr")}
        return _settings(kind, **values, model=model, clip_model="ViT-B/32", decoder="openai", transformer_dir=None,
                         mega=False)

    real = settings("probe", "openai").generation_config(3)
    assert (real.iters, real.save_every, real.cutn, real.size, real.lr, real.seed) == (2000, 50, 32, 256, 0.1, 3)
    assert settings("compare", "openai").generation_config(0).iters == 1000
    toy = settings("compare", "toy").generation_config(0)
    assert {k: getattr(toy, k) for k in TOY_DEFAULTS} == TOY_DEFAULTS
    given = settings("probe", "toy", iters=7, cutn=3).generation_config(1)
    assert {k: getattr(given, k) for k in TOY_DEFAULTS} == {**TOY_DEFAULTS, "iters": 7, "cutn": 3}
    # experiment.json: the real world's record keeps its keys and values (older experiments resume) ...
    assert settings("compare", "openai").record() == {
        "model": "openai", "clip_model": "ViT-B/32", "decoder": "openai", "transformer": None, "iters": 1000,
        "save_every": 50, "cutn": 32, "size": None, "lr": 0.1, "mega": False}
    # ... the toy world's holds the effective values, so the default given explicitly is the same experiment
    assert EngineSettings(model="toy").record() == EngineSettings(model="toy", iters=TOY_DEFAULTS["iters"]).record()
    assert EngineSettings(model="toy").record() != EngineSettings(model="toy", cutn=TOY_DEFAULTS["cutn"] + 1).record()
    assert EngineSettings(model="toy").record()["relaxation"] == TOY_DEFAULTS["relaxation"]
    # the reports name the toy world's blank canvas, not where this machine keeps it
    shown = EngineSettings(model="toy").used(["optimize"])["optimize"]
    assert shown["init_image"].startswith("the blank canvas") and TOY_DEFAULTS["init_image"] not in str(shown)
    assert "init_image" not in EngineSettings(model="openai").used(["optimize"])["optimize"]   # none by default


def test_reports_name_the_toy_weights_folder_when_it_is_not_the_shipped_one(tmp_path, monkeypatch):
    import shutil

    from clipdraw.evaluate.engines import EngineSettings
    from clipdraw.evaluate.judge import Judge
    from clipdraw.toy.models import WEIGHTS_DIR

    settings = EngineSettings(model="toy")
    monkeypatch.delenv("CLIPDRAW_TOY_WEIGHTS", raising=False)
    assert settings.guide_name == "toy" and settings.used(["transformer"])["transformer"]["weights"] == "toy"
    for name in ("clip", "judge"):
        shutil.copy(WEIGHTS_DIR / f"{name}.safetensors", tmp_path / f"{name}.safetensors")
    monkeypatch.setenv("CLIPDRAW_TOY_WEIGHTS", str(tmp_path))
    assert str(tmp_path.resolve()) in settings.guide_name and settings.guide_name.startswith("toy")
    assert str(tmp_path.resolve()) in settings.used(["transformer"])["transformer"]["weights"]
    judge = Judge.load("toy-judge")
    assert judge.path == str(tmp_path / "judge.safetensors") and str(tmp_path.resolve()) in judge.description
    monkeypatch.delenv("CLIPDRAW_TOY_WEIGHTS")   # the description follows where the judge was loaded from
    assert str(tmp_path.resolve()) in judge.description and settings.guide_name == "toy"
    assert EngineSettings(model="openai").guide_name == EngineSettings().clip_model   # the real world: its CLIP's name
