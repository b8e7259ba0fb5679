"""Run folders, atomic files, animations."""

from __future__ import annotations

from dataclasses import asdict

import imageio.v2 as imageio
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

    from clipdraw.weights import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "run.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644
