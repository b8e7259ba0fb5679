"""Run folders, atomic files, animations."""

from __future__ import annotations

import gc
import json
from dataclasses import asdict

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from clipdraw import ClipdrawError, GenerationConfig, generate
from clipdraw import cli as clipdraw_cli
from clipdraw.outputs import RunWriter, check_output_root, make_run_dir, slugify


def test_slugs_are_short_safe_names():
    assert slugify("A photo of Albert Einstein!") == "a-photo-of-albert-einstein"
    assert slugify("   ///   ") == "prompt"
    assert len(slugify("word " * 50)) <= 60 and not slugify("word " * 50).endswith("-")


def test_run_folders_never_collide(tmp_path):
    first = make_run_dir(tmp_path / "out", "a cat", 3)
    second = make_run_dir(tmp_path / "out", "a cat", 3)
    third = make_run_dir(tmp_path / "out", "a cat", 4)
    assert [p.name for p in (first, second, third)] == ["a-cat-3", "a-cat-3-2", "a-cat-4"]


def test_output_root_checks_create_nothing(tmp_path):
    check_output_root(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClipdrawError, match="is a file"):
        check_output_root(tmp_path / "file")


def test_mp4_and_gif_have_one_frame_per_saved_frame(tmp_path, tiny_models_cpu):
    pytest.importorskip("imageio_ffmpeg")
    config = GenerationConfig(iters=9, seed=0, size=32, cutn=2, save_every=3)
    run_dir = make_run_dir(tmp_path, "a cat", 0)
    writer = RunWriter(run_dir, "a cat", asdict(config), {}, gif=True, mp4=True)
    result = generate(tiny_models_cpu, "a cat", config, on_frame=writer.add_frame, progress=False)
    written = writer.finish(result)
    assert set(written) == {"final", "gif", "mp4", "json"}
    with Image.open(written["gif"]) as gif:
        assert gif.n_frames == 3
    reader = imageio.get_reader(written["mp4"])
    assert reader.count_frames() == 3
    reader.close()
    assert sorted(p.name for p in run_dir.glob(".*")) == []


def test_mp4_without_ffmpeg_is_a_clean_error(tmp_path, monkeypatch, capsys, tiny_files):
    monkeypatch.setattr("clipdraw.outputs.mp4_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        clipdraw_cli.main(["a cat", "--mp4", "--out", str(tmp_path / "out"), "--decoder", str(tiny_files["decoder"]),
                           "--clip-model", str(tiny_files["clip"]), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "imageio-ffmpeg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_written_files_get_a_normal_files_mode(tmp_path):
    """Temporary files are owner-only; what is renamed into place must follow the umask like open()."""
    import os

    from clipdraw.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "run.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644


def _live_images_during_a_run(tiny_models_cpu, tmp_path, monkeypatch, save_every, keep_images=False):
    """(most frame images alive at once during the run, images alive once it is over, the result,
    the run's folder, most frames' pixels alive at once while the GIF was written)."""
    import weakref

    import clipdraw.optimize as optimize
    import clipdraw.outputs as outputs

    live, arrays = [], []   # weak references (PIL images and arrays are not hashable)

    def alive(refs):
        return sum(ref() is not None for ref in refs)
    real_to_pil, real_pixels = optimize.to_pil, getattr(outputs, "frame_pixels", None)
    peaks = {"run": 0, "gif": 0}

    def counted_to_pil(image):
        live.append(weakref.ref(made := real_to_pil(image)))
        return made

    def counted_pixels(frame):
        arrays.append(weakref.ref(pixels := real_pixels(frame)))
        peaks["gif"] = max(peaks["gif"], alive(arrays))
        return pixels

    monkeypatch.setattr(optimize, "to_pil", counted_to_pil)
    monkeypatch.setattr(outputs, "frame_pixels", counted_pixels, raising=False)
    config = GenerationConfig(iters=100, seed=0, size=32, cutn=2, save_every=save_every)
    run_dir = make_run_dir(tmp_path, f"a cat {save_every}", 0)
    writer = RunWriter(run_dir, "a cat", asdict(config), {}, gif=True)

    def on_frame(frame):
        writer.add_frame(frame)
        peaks["run"] = max(peaks["run"], alive(live))

    result = generate(tiny_models_cpu, "a cat", config, on_frame=on_frame, progress=False, keep_images=keep_images)
    writer.finish(result)
    gc.collect()
    return peaks["run"], alive(live), result, run_dir, peaks["gif"]


def test_memory_is_flat_in_the_number_of_frames(tmp_path, tiny_models_cpu, monkeypatch):
    """With --save-every 1 over 100 iterations, no more frame images are alive at once than with
    2 frames: the result keeps the chosen (here the last) frame's image, the frames' files the
    rest; the GIF is streamed from those files, one frame's pixels at a time, one GIF frame per
    saved frame. A caller that wants every image asks for them."""
    many_peak, many_after, many, many_dir, gif_peak = _live_images_during_a_run(tiny_models_cpu, tmp_path,
                                                                                monkeypatch, save_every=1)
    few_peak, few_after, few, _, _ = _live_images_during_a_run(tiny_models_cpu, tmp_path, monkeypatch, save_every=50)
    assert len(many.frames) == 100 and len(few.frames) == 2
    assert many_peak <= few_peak + 1 and many_peak <= 3, (many_peak, few_peak)
    assert many_after == few_after <= 2
    assert many.image is many.chosen_frame.image is many.frames[-1].image is not None
    assert all(f.image is None for f in many.frames[:-1])
    assert gif_peak == 1
    with Image.open(many_dir / "progress.gif") as gif:
        assert gif.n_frames == 100 and gif.size == (32, 32)
    record = json.loads((many_dir / "run.json").read_text())
    assert [f["iteration"] for f in record["frames"]] == list(range(1, 101))

    _, every_after, every, _, _ = _live_images_during_a_run(tiny_models_cpu, tmp_path, monkeypatch, save_every=1,
                                                            keep_images=True)
    assert every_after == 100 and all(f.image is not None for f in every.frames)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(many.frames, every.frames)
               if a.image is not None)


def test_the_judges_pick_keeps_its_image_and_the_rest_drop_theirs(tiny_models_cpu):
    """With a judge, the result keeps the image of its pick and of the last frame, no other;
    whoever got a frame through on_frame still holds it whole."""
    from dataclasses import replace

    from test_guidance import ScriptedJudge

    seen = []
    config = GenerationConfig(iters=6, seed=0, size=32, cutn=2, save_every=1)
    judge = ScriptedJudge([0.1, 0.9, 0.5, 0.2])
    result = generate(replace(tiny_models_cpu, judge=judge), "a cat", config, on_frame=seen.append, progress=False)
    assert result.chosen_frame is result.frames[1] and result.image is result.frames[1].image is not None
    assert result.frames[-1].image is not None
    assert [f.image is None for f in result.frames] == [True, False, True, True, True, False]
    assert all(f.image is not None for f in seen) and [f.iteration for f in seen] == list(range(1, 7))
