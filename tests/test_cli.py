"""The command line as a user meets it: real processes, real files, exit codes, stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CLIPDRAW_CACHE": str(cwd / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "clipdraw", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def tiny_args(tiny_files, out: Path, *extra) -> list:
    return ["--clip-model", tiny_files["clip"], "--decoder", tiny_files["decoder"], "--out", out,
            "--size", 32, "--cutn", 2, "--device", "cpu", "--quiet", *extra]


def assert_clean_failure(result: subprocess.CompletedProcess, pattern: str, out: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clipdraw: error:") and pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not out.exists() or not any(out.rglob("*")), "a failed run left files behind"


CHEAP_BAD_INPUTS = [
    ([""], "prompt is empty"),
    (["   "], "prompt is empty"),
    (["a cat", "--iters", "0"], "--iters"),
    (["a cat", "--save-every", "0"], "--save-every"),
    (["a cat", "--cutn", "-3"], "--cutn"),
    (["a cat", "--size", "100"], "multiple of 8"),
    (["a cat", "--augs", "blur"], "unknown augmentation"),
    (["a cat", "--clip-model", "ViT-Z/99"], "unknown CLIP model"),
    (["a cat", "--clip-model", "ViT-B/32,ViT-Z/99"], "unknown CLIP model 'ViT-Z/99'"),
    (["a cat", "--clip-model", " , "], "names no CLIP"),
    (["a cat", "--model", "toy", "--clip-model", "ViT-B/16"], "--clip-model names a real model; --model toy"),
    (["a cat", "--model", "toy", "--decoder", "openai"], "--decoder names a real model"),
    (["a cat", "--decoder", "/nonexistent/decoder.pkl"], "no such dvae weight file"),
    (["a cat", "--offline"], "https://cdn.openai.com/dall-e/decoder.pkl"),
    (["a cat", "--lr", "-1"], "lr must be positive"),
    (["a cat", "--relaxation", "argmax"], "--relaxation"),
    (["a cat", "--batch", "0"], "--batch"),
    (["a cat", "--engine", "dallemini", "--batch", "2"], "--batch is not used by --engine dallemini: it is for --engine optimize"),
    (["a cat", "--patience", "3"], "needs --judge-model"),
    (["a cat", "--model", "toy", "--judge-model", "none", "--patience", "3"], "needs --judge-model"),
    (["a cat", "--judge-model", "toy-judge"], "add --model toy"),
    (["a cat", "--cut-pow", "0"], "cut-pow must be positive"),
    (["a cat", "--engine", "transformer", "--model", "toy", "--dtype", "float16"],
     "--dtype is not used by --engine transformer: it is for --engine optimize or dallemini"),
    (["a cat", "--engine", "dallemini", "--dtype", "auto"], "unknown dtype 'auto'"),
    (["a cat", "--seed", str(2 ** 64)], "seed must be a whole number from 0 to 2**63 - 1"),
    (["a cat", "--seed", str(2 ** 63 - 1), "--batch", "2"], "with --batch 2, at most 2**63 - 2"),
    (["a cat", "--lr", "inf"], "lr must be positive (and finite), got inf"),
    (["a cat", "--tau", "inf"], "tau must be positive (and finite)"),
    (["a cat:1e400"], "the weight of 'a cat' is too large to be a number"),
    (["a cat", "--image-prompt", "cat.png:1e400"], "its weight is too large to be a number"),
    (["a cat", "--engine", "transformer", "--model", "toy", "--temperature", "inf"], "temperature must be positive"),
    (["edit", "cat.png", "--from", "a cat", "--to", " "], "--to is empty"),
]


@pytest.mark.parametrize("args,pattern", CHEAP_BAD_INPUTS, ids=[" ".join(a)[:30] or "empty" for a, _ in CHEAP_BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, pattern):
    out = tmp_path / "out"
    result = run_cli(*args, "--out", out, cwd=tmp_path)
    assert_clean_failure(result, pattern, out)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_but_absent(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("a cat", "--device", "cuda", "--out", out, cwd=tmp_path), "no CUDA", out)


def test_an_empty_output_folder_name_is_refused_not_read_as_the_current_folder(tmp_path):
    for command in (["a cat", "--model", "toy"], ["compare", "prompts.txt", "--model", "toy"], ["toy", "train"]):
        result = run_cli(*command, "--out", "", cwd=tmp_path)
        assert_clean_failure(result, "'--out': is empty: name the folder to write into", tmp_path / "never")
        assert list(tmp_path.iterdir()) == []


def test_clipdraw_alone_prints_its_help(tmp_path):
    for command, first in (([], "Usage: clipdraw [OPTIONS] COMMAND"), (["toy"], "Usage: clipdraw toy [OPTIONS] COMMAND")):
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == "" and result.stdout.startswith(first)
        assert "Commands:" in result.stdout


def test_latents_too_large_for_the_machine_are_one_line_before_any_allocation(tmp_path):
    from clipdraw.device import total_memory
    from clipdraw.optimize import LATENT_COPIES, require_memory_for_latents

    total = total_memory(torch.device("cpu"))
    assert total and total > 2 ** 28   # a machine that runs the tests has this much
    rows = total // (LATENT_COPIES * 4 * 128 * 64) + 1   # one more row than fits, on an 8x8 grid of 128 tokens
    with pytest.raises(MemoryError, match=f"{rows} row"):
        require_memory_for_latents(rows, 128, 8, torch.device("cpu"))
    require_memory_for_latents(rows - 1, 128, 8, torch.device("cpu"))   # one row fewer passes
    out = tmp_path / "out"
    result = run_cli("a red circle", "--model", "toy", "--candidates", rows, "--iters", 1, "--out", out, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"clipdraw: error: out of memory ({rows} row(s) of latents")


def test_unusable_output_folders(tmp_path, tiny_files):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("a cat", *tiny_args(tiny_files, blocker / "sub"), cwd=tmp_path)
    assert_clean_failure(result, "is a file, not a folder", blocker / "sub")
    unwritable = Path("/proc/clipdraw-out")   # not writable, even by root
    result = run_cli("a cat", *tiny_args(tiny_files, unwritable), cwd=tmp_path)
    assert_clean_failure(result, "not writable", tmp_path / "never")


@pytest.mark.parametrize("damage", ["truncated-decoder", "garbage-clip", "clip-as-decoder", "decoder-as-clip"])
def test_bad_weight_files(tmp_path, tiny_files, damage):
    decoder, clip = tiny_files["decoder"], tiny_files["clip"]
    if damage == "truncated-decoder":
        decoder = tmp_path / "decoder.pkl"
        decoder.write_bytes(tiny_files["decoder"].read_bytes()[:5000])
    elif damage == "garbage-clip":
        clip = tmp_path / "clip.pt"
        clip.write_bytes(os.urandom(10000))
    elif damage == "clip-as-decoder":
        decoder = tiny_files["clip"]
    else:
        clip = tiny_files["decoder"]
    out = tmp_path / "out"
    result = run_cli("a cat", "--clip-model", clip, "--decoder", decoder, "--out", out, "--size", 32,
                     "--device", "cpu", cwd=tmp_path)
    assert_clean_failure(result, {"clip-as-decoder": "not a dall_e Decoder",
                                  "decoder-as-clip": "not a CLIP checkpoint"}.get(damage, "cannot read"), out)


def png_text(path: Path) -> dict:
    with Image.open(path) as image:
        image.load()
        return dict(image.text)


def test_a_run_writes_frames_gif_and_run_json(tmp_path, tiny_files):
    out = tmp_path / "out"
    result = run_cli("A red apple!|blurry:-0.5", *tiny_args(tiny_files, out, "--iters", 7, "--save-every", 3,
                                                             "--seed", 5), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = out / "a-red-apple-blurry-0-5-5"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "final.png", "frame_000003.png", "frame_000006.png", "frame_000007.png", "progress.gif", "run.json"]
    with Image.open(run_dir / "progress.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (32, 32)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["seed"] == 5 == record["settings"]["seed"]
    assert record["settings"]["iters"] == 7 and record["settings"]["cutn"] == 2
    assert [f["iteration"] for f in record["frames"]] == [3, 6, 7]
    assert all(-1 <= f["similarity"] <= 1 for f in record["frames"])
    assert record["seconds_per_iteration"] > 0 and record["iterations_done"] == 7
    assert record["versions"]["torch"] == metadata.version("torch") and record["versions"]["DALL-E"] == "0.1"
    assert record["models"]["decoder"]["vocab_size"] == 512 and record["models"]["clip"]["input_resolution"] == 32
    assert record["models"]["decoder"]["dtype"] == "float32"   # auto on a CPU
    assert record["prompts"] == [{"text": "A red apple!", "weight": 1.0}, {"text": "blurry", "weight": -0.5}]
    text = png_text(run_dir / "final.png")
    assert text["prompt"] == "A red apple!|blurry:-0.5" and text["seed"] == "5" and text["iteration"] == "7"
    assert json.loads(text["settings"])["size"] == 32
    assert str(run_dir / "final.png") in result.stdout

    again = run_cli("A red apple!|blurry:-0.5", *tiny_args(tiny_files, out, "--iters", 7, "--save-every", 3,
                                                            "--seed", 5, "--no-gif"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    second = out / "a-red-apple-blurry-0-5-5-2"     # never overwrites the first run
    assert not (second / "progress.gif").exists()
    first_pixels = np.asarray(Image.open(run_dir / "final.png"))
    assert np.array_equal(first_pixels, np.asarray(Image.open(second / "final.png")))   # bit-identical on CPU


def test_dtype_runs_the_decoder_in_half_precision_on_a_cpu(tmp_path, tiny_files):
    out = tmp_path / "out"
    result = run_cli("a cat", *tiny_args(tiny_files, out, "--iters", 2, "--seed", 1, "--dtype", "bfloat16"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "a-cat-1" / "run.json").read_text())
    assert record["models"]["decoder"]["dtype"] == "bfloat16" and record["iterations_done"] == 2


def test_two_clip_models_guide_one_run_and_run_json_names_both(tmp_path, tiny_files):
    other = tiny_models.save_tiny_clip(tmp_path / "other-clip.pt", seed=1)
    out = tmp_path / "out"
    args = tiny_args(tiny_files, out, "--iters", 2, "--seed", 1)
    args[1] = f"{tiny_files['clip']},{other}"
    result = run_cli("a cat", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "a-cat-1" / "run.json").read_text())
    assert [m["path"] for m in record["models"]["clip"]["members"]] == [str(tiny_files["clip"]), str(other)]
    assert record["iterations_done"] == 2 and -1 <= record["final_similarity"] <= 1


def test_a_batch_writes_one_run_folder_per_seed(tmp_path, tiny_files):
    out = tmp_path / "out"
    result = run_cli("a cat", *tiny_args(tiny_files, out, "--iters", 3, "--save-every", 2, "--seed", 5, "--batch", 2,
                                          "--low-memory"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    finals = []
    for index, seed in enumerate((5, 6)):
        run_dir = out / f"a-cat-{seed}"
        assert sorted(p.name for p in run_dir.iterdir()) == [
            "final.png", "frame_000002.png", "frame_000003.png", "progress.gif", "run.json"]
        record = json.loads((run_dir / "run.json").read_text())
        assert record["seed"] == seed == record["settings"]["seed"] and record["batch_index"] == index
        assert record["settings"]["batch"] == 2 and record["settings"]["low_memory"] is True
        assert len(record["losses"]) == 3 and png_text(run_dir / "final.png")["seed"] == str(seed)
        assert str(run_dir / "final.png") in result.stdout
        finals.append(np.asarray(Image.open(run_dir / "final.png")))
    assert not np.array_equal(*finals)


def test_candidates_write_one_run_folder_of_the_judges_pick(tmp_path, tiny_files):
    import tiny_models

    judge = tiny_models.save_tiny_clip(tmp_path / "judge.pt", seed=1)
    out = tmp_path / "out"
    result = run_cli("a cat", *tiny_args(tiny_files, out, "--iters", 4, "--save-every", 2, "--seed", 3,
                                          "--candidates", 3, "--judge-model", judge), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["a-cat-3"]
    run_dir = out / "a-cat-3"
    record = json.loads((run_dir / "run.json").read_text())
    scores = record["candidates"]["scores"]
    assert len(scores) == 3 and record["candidates"]["chosen"] == scores.index(max(scores))
    assert record["final"]["judge_score"] == pytest.approx(max(scores))
    assert [f["iteration"] for f in record["frames"]] == [2, 4] and record["settings"]["candidates"] == 3
    with Image.open(run_dir / "progress.gif") as gif:
        assert gif.n_frames == 2
    assert f"of candidate {record['candidates']['chosen'] + 1} of 3" in result.stdout


def test_ctrl_c_keeps_frames_and_writes_the_gif(tmp_path, tiny_files):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clipdraw", "a long run", *map(str, tiny_args(
        tiny_files, out, "--iters", 100000, "--save-every", 2, "--seed", 1))]
    # A shell that starts pytest in the background leaves SIGINT ignored, and children inherit that:
    # give the run Ctrl-C's default action back, as a terminal would.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CLIPDRAW_CACHE": str(tmp_path / "cache")},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run_dir = out / "a-long-run-1"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(run_dir.glob("frame_*.png"))) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()   # never leave a 100,000-iteration run behind when the test fails
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted at iteration" in stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["interrupted"] is True and 4 <= record["iterations_done"] < 100000
    with Image.open(run_dir / "progress.gif") as gif:
        assert gif.n_frames == len(record["frames"]) >= 2
    assert not list(run_dir.glob(".*"))   # no temporary files left


def test_checkout_entry_point_and_help(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "generate" in result.stdout
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "generate", "--help"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    for option in ("--iters", "--seed", "--out", "--save-every", "--cutn", "--lr", "--size", "--device",
                   "--clip-model", "--decoder", "--gif / --no-gif", "--offline", "--cut-min-scale", "--cut-pow",
                   "--overview", "--tv-weight", "--ema", "--judge-model", "--patience"):
        assert option in result.stdout


def test_a_judged_run_makes_the_judges_pick_final_and_keeps_the_real_defaults(tmp_path, tiny_files):
    import tiny_models

    from clipdraw import GenerationConfig

    judge = tiny_models.save_tiny_clip(tmp_path / "judge.pt", seed=1)
    out = tmp_path / "out"
    result = run_cli("a red apple", *tiny_args(tiny_files, out, "--iters", 6, "--save-every", 1, "--seed", 2,
                                                "--lr", 0.3, "--judge-model", judge, "--no-gif"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = out / "a-red-apple-2"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["models"]["judge"]["path"] == str(judge)
    scores = [f["judge_score"] for f in record["frames"]]
    best = record["frames"][scores.index(max(scores))]   # the earliest of equals
    assert record["final"]["iteration"] == best["iteration"] and record["final"]["chosen_by"] == "judge"
    assert record["final"]["judge_score"] == best["judge_score"]
    assert record["last"] == record["frames"][-1] and record["last"]["iteration"] == 6
    assert record["judge"]["best_iteration"] == best["iteration"] and record["judge"]["last_iteration"] == 6
    assert np.array_equal(np.asarray(Image.open(run_dir / "final.png")), np.asarray(Image.open(run_dir / best["file"])))
    assert png_text(run_dir / "final.png")["iteration"] == str(best["iteration"])
    assert f"it {best['iteration']} of 6" in result.stdout and "judge" in result.stdout
    # The real world keeps its own defaults for what the command line left unsaid.
    defaults = GenerationConfig()
    for name in ("cut_min_scale", "cut_pow", "overview", "tv_weight", "ema", "relaxation", "patience"):
        assert record["settings"][name] == getattr(defaults, name), name


@pytest.mark.parametrize("typed, meant", [("tarin", "toy train"), ("socre", "score"), ("comapre", "compare"),
                                          ("colour", "color")])
def test_a_mistyped_command_is_named_not_drawn(tmp_path, capsys, typed, meant):
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as info:
        main([typed, "--model", "toy", "--iters", "1", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"did you mean 'clipdraw {meant}'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()   # nothing drawn


def test_a_prompt_word_unlike_any_command_is_still_drawn(tmp_path, capsys):
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as info:
        main(["cat", "--model", "toy", "--iters", "1", "--seed", "0", "--out", str(tmp_path / "out"), "--quiet"])
    assert info.value.code == 0 and (tmp_path / "out" / "cat-0" / "final.png").is_file()


@pytest.mark.parametrize("batch", [1, 2])
def test_ctrl_c_before_the_first_frame_leaves_no_run_folder(tmp_path, monkeypatch, capsys, batch):
    from clipdraw import optimize
    from clipdraw.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optimize.Optimization, "__init__", interrupted)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["a red circle", "--model", "toy", "--iters", "2", "--seed", "3", "--batch", str(batch),
              "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 130 and err.strip().splitlines()[-1] == "clipdraw: interrupted before the first frame: nothing kept"
    assert out.is_dir() and list(out.iterdir()) == []
