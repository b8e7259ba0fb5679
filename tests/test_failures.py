"""One failure path (issue 16, point 2): every command ends with one line on stderr and an exit
code, whatever stops it, and a run that fails mid-way is never counted as finished.

Each fault is injected for real where the machine allows it (a file-size limit in a child
process) and by a stand-in where it does not (a disk that fills, a folder that turns read-only
under root, an out-of-memory error from inside the optimizer's step)."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipdraw import ClipdrawError

import tiny_models

EXIT_FAILURE, EXIT_USAGE = 1, 2   # a run that failed; bad input

PACKAGE_TOY_WEIGHTS = Path(__file__).resolve().parents[1] / "clipdraw" / "toy" / "weights"


# --------------------------------------------------------------------------- helpers


def run_main(*args) -> int:
    """clipdraw's console entry point in this process; its exit code."""
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def file_size_limit(limit: int):
    """For a child process: regular files may not grow past ``limit`` bytes, and going past
    fails the write with EFBIG instead of killing the process (SIGXFSZ ignored, as ``ulimit -f``
    leaves it in a shell that traps it)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_cli(*args, cwd: Path, limit: int = None, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CLIPDRAW_CACHE": str(cwd / "cache"), "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, "-m", "clipdraw", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=file_size_limit(limit) if limit else None)


def tiny_args(tiny_files, out: Path, *extra) -> list:
    return ["--clip-model", tiny_files["clip"], "--decoder", tiny_files["decoder"], "--out", out, "--size", 32,
            "--cutn", 2, "--device", "cpu", "--quiet", "--seed", 0, *extra]


def error_line(stderr: str) -> str:
    """The one error line, which must end stderr, with no traceback anywhere."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("clipdraw: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


def assert_consistent_run_folders(out: Path) -> None:
    """What a failed run leaves: no temporary file, only whole images, and no run.json unless it
    says the run failed (it may be missing: the disk may be what failed)."""
    assert not [p for p in out.rglob("*") if ".part" in p.name], sorted(out.rglob("*"))
    for run_dir in [p for p in out.iterdir() if p.is_dir()] if out.exists() else []:
        if (run_dir / "run.json").exists():
            assert json.loads((run_dir / "run.json").read_text())["status"] == "error", \
                f"a failed run in {run_dir} looks finished"
        for image in run_dir.glob("*.png"):
            with Image.open(image) as opened:
                opened.verify()


# --------------------------------------------------------------------------- writes that fail


@pytest.fixture(scope="module")
def reference_run(tiny_files, tmp_path_factory) -> dict:
    """File sizes of an unhindered tiny run: what a file-size limit must fall between."""
    cwd = tmp_path_factory.mktemp("reference")
    result = run_cli("a cat", *tiny_args(tiny_files, cwd / "out", "--iters", 4, "--save-every", 2), cwd=cwd)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (cwd / "out").iterdir()
    return {p.name: p.stat().st_size for p in run_dir.iterdir()}


@pytest.mark.parametrize("fault", ["first-frame", "run.json"])
def test_a_write_past_the_file_size_limit_is_one_line_and_exit_1(tmp_path, tiny_files, reference_run, fault):
    images = max(size for name, size in reference_run.items() if name.endswith((".png", ".gif")))
    assert reference_run["run.json"] > images + 200, reference_run
    limit = 64 if fault == "first-frame" else (images + reference_run["run.json"]) // 2
    out = tmp_path / "out"
    result = run_cli("a cat", *tiny_args(tiny_files, out, "--iters", 4, "--save-every", 2), cwd=tmp_path, limit=limit)
    assert result.returncode == EXIT_FAILURE, result.stderr
    line = error_line(result.stderr)
    failed = out / "a-cat-0" / ("frame_000002.png" if fault == "first-frame" else "run.json")
    assert f"cannot write {failed}: File too large" in line and "ulimit -f" in line, line
    assert result.stdout == ""
    assert_consistent_run_folders(out)
    kept = sorted(p.name for p in (out / "a-cat-0").iterdir())
    if fault == "run.json":   # every image was whole before the record failed; the shorter error record fits
        assert kept == ["final.png", "frame_000002.png", "frame_000004.png", "progress.gif", "run.json"]
        assert json.loads((out / "a-cat-0" / "run.json").read_text())["status"] == "error"
    else:
        assert kept == []


def test_a_gif_past_the_file_size_limit_names_the_gif(tmp_path):
    # The toy transformer's 64 px frames are 3-5 kB each and its GIF of 8 of them near 28 kB: a
    # 16 kB limit fails the GIF alone, deep inside PIL, where the error carries no file name.
    out = tmp_path / "out"
    result = run_cli("a red circle", "--model", "toy", "--engine", "transformer", "--seed", 0, "--out", out,
                     "--device", "cpu", "--quiet", cwd=tmp_path, limit=16384)
    assert result.returncode == EXIT_FAILURE, result.stderr
    line = error_line(result.stderr)
    assert f"cannot write {out / 'a-red-circle-0' / 'progress.gif'}: File too large" in line, line
    assert_consistent_run_folders(out)
    assert len(list((out / "a-red-circle-0").glob("frame_*.png"))) == 8


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_disk_full_read_only_or_denied_mid_run_is_one_line_and_exit_1(tmp_path, tiny_files, capsys, monkeypatch,
                                                                     code):
    import clipdraw.io

    real = clipdraw.io.temp_file_beside
    written = []

    def fails_from_the_second_frame(path, *args):
        written.append(path.name)
        if len(written) >= 2:   # as a full disk or a folder turned read-only would fail creating the file
            raise OSError(code, os.strerror(code), str(path.parent / f".{path.name}.x.part"))
        return real(path, *args)

    monkeypatch.setattr(clipdraw.io, "temp_file_beside", fails_from_the_second_frame)
    out = tmp_path / "out"
    assert run_main("a cat", *tiny_args(tiny_files, out, "--iters", 4, "--save-every", 1)) == EXIT_FAILURE
    line = error_line(capsys.readouterr().err)
    assert f"cannot write {out / 'a-cat-0' / 'frame_000002.png'}: {os.strerror(code)}" in line, line
    assert_consistent_run_folders(out)
    assert sorted(p.name for p in (out / "a-cat-0").iterdir()) == ["frame_000001.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the stand-in above covers it")
def test_a_run_folder_turned_read_only_mid_run(tmp_path, tiny_files, capsys, monkeypatch):
    import clipdraw.outputs

    real = clipdraw.outputs.RunWriter.add_frame

    def then_read_only(self, frame):
        real(self, frame)
        self.run_dir.chmod(0o555)

    monkeypatch.setattr(clipdraw.outputs.RunWriter, "add_frame", then_read_only)
    out = tmp_path / "out"
    try:
        assert run_main("a cat", *tiny_args(tiny_files, out, "--iters", 2, "--save-every", 1)) == EXIT_FAILURE
    finally:
        for folder in out.iterdir():
            folder.chmod(0o755)
    line = error_line(capsys.readouterr().err)
    assert f"cannot write {out / 'a-cat-0'}" in line and "Permission denied" in line, line
    assert_consistent_run_folders(out)


# --------------------------------------------------------------------------- out of memory


def out_of_memory_errors():
    cuda = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.90 GiB total "
                                       "capacity; 13.1 GiB already allocated)\nmore lines")
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                       "tried to allocate 1099511627776 bytes.")
    errors = {"cuda": cuda, "cpu-allocator": cpu, "python": MemoryError(),
              "mps": RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)")}
    if hasattr(torch, "OutOfMemoryError"):   # torch >= 2.5
        errors["torch"] = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
    return errors


@pytest.mark.parametrize("kind", list(out_of_memory_errors()))
def test_out_of_memory_in_the_step_names_what_to_lower(tmp_path, tiny_files, capsys, monkeypatch, kind):
    import clipdraw.optimize

    real, calls = clipdraw.optimize.Optimization.step, []

    def step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise out_of_memory_errors()[kind]
        return real(self, *args, **kwargs)

    monkeypatch.setattr(clipdraw.optimize.Optimization, "step", step)
    out = tmp_path / "out"
    assert run_main("a cat", *tiny_args(tiny_files, out, "--iters", 5, "--save-every", 1)) == EXIT_FAILURE
    line = error_line(capsys.readouterr().err)
    assert line.startswith("clipdraw: error: out of memory") and "more lines" not in line, line
    assert all(flag in line for flag in ("--batch", "--cutn", "--size", "--low-memory")), line
    assert_consistent_run_folders(out)
    assert sorted(p.name for p in (out / "a-cat-0").iterdir()) == ["frame_000001.png", "frame_000002.png", "run.json"]
    record = json.loads((out / "a-cat-0" / "run.json").read_text())   # says what happened and what was kept
    assert record["status"] == "error" and "memory" in record["error"].lower()
    assert [f["file"] for f in record["frames"]] == ["frame_000001.png", "frame_000002.png"]


def test_debug_variable_shows_the_traceback(tmp_path, tiny_files, monkeypatch):
    import clipdraw.optimize

    def step(self, *args, **kwargs):
        raise MemoryError("fake")

    monkeypatch.setattr(clipdraw.optimize.Optimization, "step", step)
    monkeypatch.setenv("CLIPDRAW_DEBUG", "1")
    with pytest.raises(MemoryError, match="fake"):
        run_main("a cat", *tiny_args(tiny_files, tmp_path / "out", "--iters", 2))


def test_an_unexpected_error_is_one_line_exit_1_and_says_how_to_see_more(tmp_path, tiny_files, capsys, monkeypatch):
    import clipdraw.optimize

    def step(self, *args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(clipdraw.optimize.Optimization, "step", step)
    assert run_main("a cat", *tiny_args(tiny_files, tmp_path / "out", "--iters", 2)) == EXIT_FAILURE
    line = error_line(capsys.readouterr().err)
    assert "unexpected ZeroDivisionError: division by zero" in line and "CLIPDRAW_DEBUG=1" in line, line


# --------------------------------------------------------------------------- experiments: resume


def compare_args(tiny_files, prompts: Path, out: Path) -> list:
    return ["compare", prompts, "--engines", "optimize", "--clip-model", tiny_files["clip"], "--decoder",
            tiny_files["decoder"], "--eval-model", tiny_files["clip"], "--size", 32, "--iters", 2, "--cutn", 2,
            "--offline", "--out", out, "--device", "cpu", "--quiet"]


def test_out_of_memory_mid_compare_keeps_finished_runs_then_resume_redoes_a_corrupt_one(tmp_path, tiny_files, capsys,
                                                                                        monkeypatch):
    import clipdraw.optimize

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\na green pear\n")
    out = tmp_path / "cmp"
    real, calls = clipdraw.optimize.Optimization.step, []
    fail_at = {3}   # the second run's first step

    def step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) in fail_at:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(clipdraw.optimize.Optimization, "step", step)
    assert run_main(*compare_args(tiny_files, prompts, out)) == EXIT_FAILURE
    line = error_line(capsys.readouterr().err)
    assert "out of memory" in line and "--cutn or --size" in line and "--batch" not in line, line
    finished = sorted(p.parent for p in out.glob("runs/optimize/*/*/run.json"))
    assert len(finished) == 1 and len(list(out.glob("runs/optimize/*/*"))) == 1   # the failed run's folder is gone

    fail_at.clear()
    assert run_main(*compare_args(tiny_files, prompts, out)) == 0
    assert "1 of 2 run(s) already finished" in capsys.readouterr().err
    assert len(calls) == 2 + 1 + 2   # the finished run was not redone
    runs = sorted(p.parent for p in out.glob("runs/optimize/*/*/run.json"))
    assert len(runs) == 2

    record = runs[0] / "run.json"
    record.write_text(record.read_text()[:100])   # cut short, as a crash of the disk might leave it
    assert run_main(*compare_args(tiny_files, prompts, out)) == 0
    assert "1 of 2 run(s) already finished" in capsys.readouterr().err
    assert len(calls) == 5 + 2 and json.loads(record.read_text())["prompt"]


def finished_folder(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("final.png", "frame_000001.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(run_dir / name)
    record = {"prompt": "a cat", "seed": 0, "interrupted": False, "frames": [{"iteration": 1, "file": "frame_000001.png",
              "similarity": 0.2}], "final": {"file": "final.png", "iteration": 1, "similarity": 0.2}}
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


def damage(run_dir: Path, how: str) -> None:
    record_path = run_dir / "run.json"
    record = json.loads(record_path.read_text())
    if how == "truncated-json":
        record_path.write_text(record_path.read_text()[:40])
    elif how == "not-an-object":
        record_path.write_text("[1, 2]")
    elif how == "nested-too-deep":
        record_path.write_text("[" * 100_000 + "]" * 100_000)
    elif how == "error-recorded":
        record_path.write_text(json.dumps({**record, "error": "OSError: [Errno 28] No space left on device"}))
    elif how == "interrupted":
        record_path.write_text(json.dumps({**record, "interrupted": True}))
    elif how == "no-final-entry":
        record_path.write_text(json.dumps({k: v for k, v in record.items() if k != "final"}))
    elif how == "final-png-cut":
        data = (run_dir / "final.png").read_bytes()
        (run_dir / "final.png").write_bytes(data[: len(data) // 2])
    elif how == "final-png-missing":
        (run_dir / "final.png").unlink()
    elif how == "frame-missing":
        (run_dir / "frame_000001.png").unlink()
    elif how == "frame-outside":
        record["frames"][0]["file"] = "../run/frame_000001.png"
        record_path.write_text(json.dumps(record))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated-json", "not-an-object", "nested-too-deep", "error-recorded", "interrupted",
                                 "no-final-entry", "final-png-cut", "final-png-missing", "frame-missing",
                                 "frame-outside"])
def test_a_damaged_run_folder_is_never_counted_as_finished(tmp_path, how):
    from clipdraw.evaluate.runs import RunSpec, finished_record

    spec = RunSpec(key="optimize/a-cat/seed-0", engine="optimize", prompt="a cat", seed=0)
    run_dir = finished_folder(tmp_path)
    assert finished_record(run_dir, spec) is not None
    damage(run_dir, how)
    assert finished_record(run_dir, spec) is None


# --------------------------------------------------------------------------- foreign model files


def foreign_transformer(folder: Path, kind: str) -> Path:
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    folder.mkdir()
    target = folder / "transformer.safetensors"
    shipped = PACKAGE_TOY_WEIGHTS / "transformer.safetensors"
    if kind == "no-metadata":
        save_file({"weight": torch.zeros(4, 4)}, str(target))
    elif kind == "clip-weights":
        shutil.copy(PACKAGE_TOY_WEIGHTS / "clip.safetensors", target)
    else:
        with safe_open(str(shipped), framework="pt") as f:
            meta = json.loads(f.metadata()["clipdraw"])
        state = load_file(str(shipped))
        if kind == "shapes-disagree":
            meta["image_tokens"] = meta.get("image_tokens", 64) // 4
        elif kind == "extra-layer":
            for key in [k for k in state if k.startswith("blocks.layers.0.")]:
                state[key.replace("layers.0.", "layers.9.")] = state[key].clone()
        elif kind == "bad-metadata":
            meta["words"] = "not a list"
        save_file(state, str(target), metadata={"clipdraw": json.dumps(meta)})
    return target


@pytest.mark.parametrize("kind", ["no-metadata", "clip-weights", "shapes-disagree", "extra-layer", "bad-metadata"])
def test_a_foreign_transformer_folder_is_one_line_and_exit_2(tmp_path, capsys, kind):
    target = foreign_transformer(tmp_path / "foreign", kind)
    out = tmp_path / "out"
    assert run_main("a red circle", "--model", "toy", "--engine", "transformer", "--transformer", target.parent,
                    "--out", out, "--device", "cpu", "--quiet") == EXIT_USAGE
    line = error_line(capsys.readouterr().err)
    assert f"{target} is not a clipdraw transformer" in line, line
    assert not out.exists() or not any(out.rglob("*"))


def test_the_shipped_transformer_still_loads():
    from clipdraw.toy.models import load_toy_gpt

    model, tokenizer = load_toy_gpt()
    assert model.image_tokens == 64 and len(tokenizer) > 2


def test_the_decoder_refuses_wrong_input_in_one_clipdraw_line():
    from clipdraw.errors import InputError, describe_failure
    from clipdraw.dvae import DVAEDecoder

    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    for wrong in (torch.zeros(1, 100, 2, 2), torch.zeros(1, 512, 2, 2, dtype=torch.float64), torch.zeros(512, 2, 2)):
        with pytest.raises(ClipdrawError) as info:
            decoder(wrong)
        assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)
        message, code = describe_failure(info.value)
        assert code == EXIT_USAGE and "\n" not in message and "(batch, 512, grid, grid)" in message, message


# --------------------------------------------------------------------------- the mapping itself


def test_describe_failure_maps_each_kind_to_one_line_and_its_code():
    from clipdraw.errors import describe_failure

    cases = [
        (ClipdrawError("bad\ninput"), EXIT_USAGE, "bad input"),
        (OSError(errno.ENOSPC, "No space left on device", "/out/x.png"), EXIT_FAILURE,
         "cannot write /out/x.png: No space left on device (the disk is full)"),
        (PermissionError(errno.EACCES, "Permission denied", "/out"), EXIT_FAILURE, "cannot write /out: Permission denied"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/in.png"), EXIT_FAILURE,
         "file error on /in.png: No such file or directory"),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), EXIT_FAILURE, "out of memory"),
        (MemoryError(), EXIT_FAILURE, "out of memory (MemoryError): lower --batch, --candidates, --cutn or --size, or add --low-memory"),
        (KeyError("x"), EXIT_FAILURE, "unexpected KeyError: 'x'"),
    ]
    for error, code, words in cases:
        message, got = describe_failure(error)
        assert got == code and words in message and "\n" not in message, (error, message)
    assert "lower --cutn" in describe_failure(MemoryError(), memory_hint="lower --cutn")[0]
