"""Reports that do not mislead (issue 17): plot axes with room at the edges, face columns only
where faces are counted, the settings the engines used at their real values, no empty cache or
run folder, compare runs that keep frames when asked, one line on Ctrl-C, transformer frames
whose unsampled rows look unsampled, and the HTML reports as a browser draws them."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOY_SHAPES = ROOT / "experiments" / "probes" / "toy_shapes.txt"
TOY = ("--model", "toy", "--device", "cpu", "--quiet")
SHORT = ("--iters", "2", "--save-every", "1", "--cutn", "2")   # the optimizer's shortest run with frames


def lines_file(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def run_main(*args) -> int:
    """clipdraw's console entry point in this process: its exit code."""
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


class SettingsTable(HTMLParser):
    """The first table of a report page (its header and settings), as {setting: value}."""

    def __init__(self):
        super().__init__()
        self.rows, self._cells, self._tables, self._in_cell = {}, [], 0, False

    def handle_starttag(self, tag, attrs):
        self._tables += tag == "table"
        self._in_cell = tag == "td" and self._tables == 1
        if tag == "tr":
            self._cells = []

    def handle_endtag(self, tag):
        self._in_cell = False
        if tag == "tr" and self._tables == 1 and len(self._cells) == 2:
            self.rows[self._cells[0]] = self._cells[1]

    def handle_data(self, data):
        if self._in_cell:
            self._cells.append(data)


def settings_of(page: Path) -> dict:
    parser = SettingsTable()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.rows


def columns_of(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return next(csv.reader(f))


def empty_folders(root: Path) -> list:
    return [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]


# --------------------------------------------------------------------------- plots


def test_probability_curves_leave_room_at_the_edges():
    """P(entity) at 0.99998 and 0.00001 lies inside the axis, not on its frame; one frame shows as a mark."""
    from clipdraw.evaluate.probe import curves_figure
    from clipdraw.evaluate.report import try_pyplot

    plt = try_pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed")
    runs = [{"entity": "red circle", "template": t, "seed": 0, "second_face": None} for t in ("a {}", "{}")]
    frames = [{"entity": "red circle", "template": "a {}", "seed": 0, "iteration": i, "judge_similarity_x100": 30.0,
               "p_entity": p} for i, p in ((10, 0.99998), (20, 0.99999))]
    frames.append({"entity": "red circle", "template": "{}", "seed": 0, "iteration": 10, "judge_similarity_x100": 20.0,
                   "p_entity": 0.00001})
    fig = curves_figure(plt, "red circle", runs, frames)
    try:
        similarity, probability = fig.axes
        low, high = probability.get_ylim()
        assert low < 0 and high > 1
        margin = 0.02 * (high - low)
        for line in probability.get_lines():
            assert low + margin < min(line.get_ydata()) and max(line.get_ydata()) < high - margin
        assert all(line.get_marker() not in (None, "None", "", " ") for axis in fig.axes for line in axis.get_lines())
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- probe


def test_the_kind_a_list_declares_decides_whether_faces_are_counted(tmp_path):
    from clipdraw.evaluate.probe import faces_by_default, list_kind

    probes = ROOT / "experiments" / "probes"
    assert (list_kind(probes / "people.txt"), list_kind(probes / "brands.txt"), list_kind(TOY_SHAPES)) == \
        ("people", "brands", "shapes")
    assert faces_by_default(probes / "people.txt")
    assert not faces_by_default(probes / "brands.txt") and not faces_by_default(TOY_SHAPES)
    undeclared = lines_file(tmp_path / "names.txt", "# some names", "Ada Lovelace", "Alan Turing")
    assert list_kind(undeclared) is None and not faces_by_default(undeclared)


def test_a_shapes_probe_shows_no_face_columns_and_the_toy_settings_it_used(tmp_path, capsys):
    out = tmp_path / "probe"
    args = ["probe", TOY_SHAPES, "--templates", "a {}", *TOY, *SHORT, "--out", out]
    assert run_main(*args) == 0
    face_columns = {"first_face", "second_face", "max_faces", "second_face_runs", "faces"}
    for name in ("probe_summary.csv", "probe_runs.csv", "probe_frames.csv"):
        assert not face_columns & set(columns_of(out / name)), name
    page = (out / "probe.html").read_text(encoding="utf-8")
    assert "second_face" not in page and " face" not in page.split("<h2>Frames</h2>")[1]
    settings = settings_of(out / "probe.html")
    assert settings["faces"] == "not counted" and settings["model"] == "toy"
    # the toy world's models and defaults, not the real world's names and an unset size
    assert not {"clip_model", "decoder", "size", "transformer", "mega"} & set(settings)
    assert (settings["optimize: size"], settings["optimize: iters"], settings["optimize: cutn"]) == ("64", "2", "2")
    assert settings["optimize: relaxation"] == "straight-through"
    assert "None" not in settings.values()
    assert json.loads((out / "probe.json").read_text())["settings"]["optimize"]["size"] == 64
    # nothing cached: the toy world is shipped
    assert not Path(os.environ["CLIPDRAW_CACHE"]).exists()
    if importlib.util.find_spec("cv2") is None:   # --faces needs OpenCV
        return
    capsys.readouterr()
    assert run_main(*args, "--faces") == 0   # re-judged, not regenerated: the face columns appear
    assert "4 of 4 run(s) already finished" in capsys.readouterr().err
    assert {"first_face", "second_face", "max_faces"} <= set(columns_of(out / "probe_runs.csv"))
    assert settings_of(out / "probe.html")["faces"].startswith("counted")


# --------------------------------------------------------------------------- compare


def test_compare_keeps_frames_and_a_gif_when_asked_and_shows_each_engines_settings(tmp_path):
    prompts = lines_file(tmp_path / "prompts.txt", "a red circle", "a blue square")
    out = tmp_path / "kept"
    assert run_main("compare", prompts, "--engines", "optimize,transformer", *TOY, *SHORT, "--keep-frames",
                    "--out", out) == 0
    for run_dir in (out / "runs" / engine / "a-red-circle" / "seed-0" for engine in ("optimize", "transformer")):
        record = json.loads((run_dir / "run.json").read_text())
        frames = sorted(p.name for p in run_dir.glob("frame_*.png"))
        assert frames and frames == sorted(f["file"] for f in record["frames"])
        assert (run_dir / "progress.gif").is_file() and record["animations"] == {"gif": "progress.gif"}
    first = np.asarray(Image.open(out / "runs" / "transformer" / "a-red-circle" / "seed-0" / "frame_000008.png"))
    assert (first[8:] == 128).all()   # rows not sampled yet are grey, not token 0's picture
    settings = settings_of(out / "compare.html")
    assert settings["frames kept"] == "yes" and settings["model"] == "toy"
    assert settings["optimize: size"] == "64" and settings["transformer: weights"] == "toy"
    assert settings["transformer: save_every"] == "every row of tokens"
    assert not {"clip_model", "decoder", "size", "mega"} & set(settings) and "None" not in settings.values()
    assert not Path(os.environ["CLIPDRAW_CACHE"]).exists()

    plain = tmp_path / "plain"   # by default: the image and its record
    assert run_main("compare", prompts, "--engines", "transformer", *TOY, "--out", plain) == 0
    run_dir = plain / "runs" / "transformer" / "a-red-circle" / "seed-0"
    assert sorted(p.name for p in run_dir.iterdir()) == ["final.png", "run.json"]
    settings = settings_of(plain / "compare.html")
    assert settings["frames kept"] == "no" and "guiding CLIP (optimize)" not in settings
    assert not any(key.startswith("optimize") for key in settings)


@pytest.mark.parametrize("interrupted_run", [1, 2])
def test_ctrl_c_during_compare_says_so_once_and_leaves_no_empty_folder(tmp_path, capsys, monkeypatch,
                                                                       interrupted_run):
    from clipdraw.engines.transformer import TransformerEngine

    real_generate, calls = TransformerEngine.generate, []

    def interrupted(self, prompt, seed, on_frame=None, progress=True):
        calls.append(prompt)

        def frame_then_ctrl_c(frame):
            on_frame(frame)
            if len(calls) == interrupted_run and frame.iteration >= 24:
                raise KeyboardInterrupt

        return real_generate(self, prompt, seed, frame_then_ctrl_c, progress)

    monkeypatch.setattr(TransformerEngine, "generate", interrupted)
    prompts = lines_file(tmp_path / "prompts.txt", "a red circle", "a blue square", "a green triangle")
    out = tmp_path / "cmp"
    assert run_main("compare", prompts, "--engines", "transformer", *TOY, "--keep-frames", "--out", out) == 130
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "interrupted" in line]) == 1, err
    assert empty_folders(out) == []
    finished = sorted(p.parent.parent.name for p in out.glob("runs/*/*/*/run.json"))
    assert finished == (["a-red-circle"] if interrupted_run == 2 else [])
    assert (out / "compare.html").is_file() == (interrupted_run == 2)
    if interrupted_run == 1:
        assert "nothing was finished" in err and not (out / "runs").exists()


def test_a_failed_download_leaves_no_cache_folder_and_no_run_folder(tmp_path, monkeypatch, capsys):
    """A real-world probe on a machine that cannot fetch the weights: one line, nothing left behind."""
    monkeypatch.setenv("CLIPDRAW_MIRROR", (tmp_path / "no-mirror").as_uri())   # every fetch fails, offline
    names = lines_file(tmp_path / "people.txt", "Albert Einstein", "Steve Jobs")
    out = tmp_path / "probe"
    assert run_main("probe", names, "--no-faces", "--out", out, "--device", "cpu", "--quiet") == 2
    assert "cannot download" in capsys.readouterr().err
    assert not Path(os.environ["CLIPDRAW_CACHE"]).exists()
    assert not (out / "runs").exists() and empty_folders(out) == []


# --------------------------------------------------------------------------- the transformer's frames


def test_transformer_frames_grey_out_the_rows_not_sampled_yet():
    from clipdraw.engines import ModelSource, load_engine
    from clipdraw.engines.transformer import UNSAMPLED

    engine = load_engine("transformer", ModelSource(model="toy", device="cpu"))
    result = engine.generate("a red circle", 0, progress=False)
    grey = round(UNSAMPLED * 255)
    side = result.frames[0].image.width
    block = side // engine.grid
    for frame in result.frames[:-1]:
        pixels = np.asarray(frame.image)
        rows = frame.iteration // engine.grid   # whole rows of tokens sampled
        assert (pixels[rows * block:] == grey).all(), frame.iteration
        assert not (pixels[:rows * block] == grey).all()
    assert not (np.asarray(result.frames[-1].image)[-block:] == grey).all()
    assert result.image is result.frames[-1].image and result.iterations_done == engine.gpt.image_tokens


def test_the_transformer_keeps_the_tokens_sampled_before_ctrl_c(monkeypatch):
    from clipdraw.engines import ModelSource, load_engine

    engine = load_engine("transformer", ModelSource(model="toy", device="cpu"), save_every=16)
    real_next, count = engine.gpt.next_token, []

    def next_token(*args, **kwargs):
        count.append(1)
        if len(count) == 21:
            raise KeyboardInterrupt
        return real_next(*args, **kwargs)

    monkeypatch.setattr(engine.gpt, "next_token", next_token)
    result = engine.generate("a red circle", 0, progress=False)
    assert result.interrupted and [f.iteration for f in result.frames] == [16, 20] and result.iterations_done == 20


# --------------------------------------------------------------------------- screenshots


def test_a_report_screenshot_shows_the_page(tmp_path):
    """experiments/report_screenshots.py draws a report in headless Chromium (skipped without one)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from report_screenshots import find_chromium, screenshot
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    if find_chromium() is None:
        pytest.skip("no chromium or google-chrome on PATH")
    from clipdraw.evaluate.report import Report

    report = Report("A report")
    report.table([{"setting": "model", "value": "toy"}])
    report.images([(Image.new("RGB", (64, 64), (220, 30, 30)), "red")], label="a red square")
    png = screenshot(report.write(tmp_path / "r.html"), tmp_path / "r.png", width=600, height=800)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[1] == 600 and pixels.shape[0] <= 800
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 100 * 100   # the thumbnail, enlarged to 128 px
