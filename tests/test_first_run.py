"""A newcomer's first run: every missing weight file named at once, given files checked before
any download, a warning when a CPU run will be long, and logs that stay small when piped."""

from __future__ import annotations

import sys

import pytest

from clipdraw import weights
from clipdraw.cli import main


def run_main(args, capsys) -> tuple:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_every_missing_weight_file_is_named_in_one_line_with_the_way_around(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPDRAW_CACHE", str(tmp_path / "cache"))
    code, out, err = run_main(["a photo of albert einstein", "--offline", "--out", tmp_path / "out"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    decoder, clip = weights.dvae_weight_file("openai"), weights.clip_weight_file("ViT-B/32")
    for weight in (decoder, clip):
        assert weight.source_url in lines[0] and str(weight.path()) in lines[0]
    assert "--model toy" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_given_file_is_checked_before_anything_is_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPDRAW_CACHE", str(tmp_path / "cache"))
    downloads = []
    monkeypatch.setattr(weights, "download", lambda *a, **k: downloads.append(a) or "0" * 64)
    broken = tmp_path / "decoder.pkl"
    broken.write_bytes(b"not a pickle at all")
    code, _, err = run_main(["a cat", "--decoder", broken, "--device", "cpu", "--out", tmp_path / "out"], capsys)
    assert code == 2 and str(broken) in err and len(err.strip().splitlines()) == 1, err
    assert downloads == []   # CLIP, which is missing, was not fetched for a run that could not start


def test_a_long_cpu_run_says_so_once_and_quiet_silences_it(tiny_models_cpu, monkeypatch, capsys):
    from clipdraw import GenerationConfig, generate, optimize

    monkeypatch.setattr(optimize, "LONG_RUN_SECONDS", 0.0)   # the tiny models are fast: any run counts as long
    config = GenerationConfig(iters=5, size=32, cutn=2, save_every=5)
    generate(tiny_models_cpu, "a cat", config, progress=True)
    said = [line for line in capsys.readouterr().err.splitlines() if "s per step on this CPU" in line]
    assert len(said) == 1 and "5 steps take about" in said[0] and "--model toy" in said[0]
    generate(tiny_models_cpu, "a cat", config, progress=False)
    assert "per step" not in capsys.readouterr().err
    monkeypatch.setattr(optimize, "LONG_RUN_SECONDS", 1e9)
    generate(tiny_models_cpu, "a cat", config, progress=True)
    assert "per step" not in capsys.readouterr().err


def test_a_bar_writing_to_a_log_redraws_on_a_timer_not_on_every_update(monkeypatch):
    """What the optimizer's loop does (a new postfix every few steps) into a pipe: a plain tqdm
    redraws at each postfix, clipdraw's bar only on its timer (the first and last states here)."""
    import io

    from tqdm.auto import tqdm

    from clipdraw import progress

    def redraws(make) -> str:
        stream = io.StringIO()   # not a terminal
        monkeypatch.setattr(sys, "stderr", stream)
        bar = make(range(100), file=stream, desc="optimizing")
        for step in bar:
            bar.set_postfix_str(f"cutout similarity {step / 100:.4f}")
        bar.close()
        return stream.getvalue()

    plain, ours = redraws(tqdm), redraws(progress.progress_bar)
    assert plain.count("\r") >= 100   # one redraw per postfix at least
    assert ours.count("\r") <= 3 and "100/100" in ours and "cutout similarity 0.9900" in ours
