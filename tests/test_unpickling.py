"""No code execution from any weight file, on every torch setup.cfg allows (issue 16, point 3).

torch < 2.6 unpickles whatever a file asks for unless ``weights_only=True`` is passed.
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` gives a newer torch that same default (it changes only
the calls that leave ``weights_only`` out), so these tests show the old behaviour on any torch:
on the code before this fix, ``clip.load`` ran the payload of a CLIP checkpoint given by path.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipdraw import ClipdrawError

import tiny_models

OLD_TORCH_DEFAULT = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}   # torch.load(path) unpickles anything, as < 2.6 did
REFUSAL = r"cannot read CLIP weights .*: refusing to load it, its pickle asks for (posix|os|nt)\.system: not a CLIP checkpoint"


class _RunsCode:
    """Unpickling this calls os.system, which creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def booby_trap(folder: Path, legacy: bool = False) -> tuple:
    """(a CLIP-looking state dict whose pickle would run code, the marker it would create)."""
    marker = folder / "code-ran"
    path = folder / "clip-trap.pt"
    state = dict(tiny_models.make_tiny_clip().state_dict())
    state["logit_scale"] = _RunsCode(marker)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    # Sanity: loaded the way clip.load loads on torch < 2.6, the file does run code.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


@pytest.fixture(params=["zip", "legacy"])
def booby_trapped(request, tmp_path) -> tuple:
    return booby_trap(tmp_path, legacy=request.param == "legacy")


def run_cli(*args, cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CLIPDRAW_CACHE": str(cwd / "cache"), **OLD_TORCH_DEFAULT, **env}
    return subprocess.run([sys.executable, "-m", "clipdraw", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"clipdraw: error: cannot read CLIP weights {path}: refusing to load it"), lines[0]
    assert re.search(REFUSAL, lines[0]) and "could run code" in lines[0], lines[0]


# --------------------------------------------------------------------------- the Python API


def test_the_python_api_refuses_it_and_no_code_runs(booby_trapped, tiny_files, monkeypatch):
    from clipdraw import load_models
    from clipdraw.evaluate.judge import Judge
    from clipdraw.models import load_clip
    from clipdraw.weights import load_clip_module

    path, marker = booby_trapped
    for key, value in OLD_TORCH_DEFAULT.items():
        monkeypatch.setenv(key, value)
    loaders = [lambda: load_clip_module(path), lambda: load_clip(str(path), device="cpu"),
               lambda: load_models(str(path), str(tiny_files["decoder"]), device="cpu"),
               lambda: Judge.load(str(path), "cpu")]
    for load in loaders:
        try:
            load()
            refusal = None
        except ClipdrawError as e:
            refusal = str(e)
        assert not marker.exists(), "the checkpoint's code ran"
        assert refusal is not None and re.search(REFUSAL, refusal) and "\n" not in refusal, refusal


# --------------------------------------------------------------------------- the command line


def test_clip_model_path_is_refused_in_one_line_and_no_code_runs(booby_trapped, tiny_files, tmp_path):
    path, marker = booby_trapped
    out = tmp_path / "out"
    result = run_cli("a cat", "--clip-model", path, "--decoder", tiny_files["decoder"], "--out", out, "--size", 32,
                     "--device", "cpu", "--quiet", cwd=tmp_path)
    assert_refused(result, path, marker)
    assert not out.exists() or not any(out.rglob("*"))


def test_eval_model_path_is_refused_in_one_line_and_no_code_runs(booby_trapped, tmp_path):
    path, marker = booby_trapped
    image = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(image)
    result = run_cli("score", image, "--text", "a red square", "--eval-model", path, "--device", "cpu", cwd=tmp_path)
    assert_refused(result, path, marker)


def test_eval_model_path_of_an_experiment_is_refused_too(tiny_files, tmp_path):
    path, marker = booby_trap(tmp_path)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    result = run_cli("compare", prompts, "--engines", "optimize", "--clip-model", tiny_files["clip"], "--decoder",
                     tiny_files["decoder"], "--eval-model", path, "--size", 32, "--iters", 1, "--cutn", 2,
                     "--offline", "--out", tmp_path / "cmp", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert_refused(result, path, marker)


def test_a_decoder_pickle_that_would_run_code_is_refused_on_the_command_line(tmp_path, tiny_files):
    marker = tmp_path / "code-ran"
    decoder = tmp_path / "decoder.pkl"
    torch.save({"payload": _RunsCode(marker)}, decoder)
    result = run_cli("a cat", "--clip-model", tiny_files["clip"], "--decoder", decoder, "--out", tmp_path / "out",
                     "--size", 32, "--device", "cpu", cwd=tmp_path)
    assert not marker.exists(), "the decoder's code ran"
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "refusing to load" in result.stderr


# --------------------------------------------------------------------------- real checkpoints still load


@pytest.mark.parametrize("variant", ["clip", "clip_jit"])
def test_state_dict_and_torchscript_checkpoints_still_load(tiny_files, variant, monkeypatch):
    from clipdraw.weights import load_clip_module

    for key, value in OLD_TORCH_DEFAULT.items():
        monkeypatch.setenv(key, value)
    model = load_clip_module(tiny_files[variant])
    reference = tiny_models.make_tiny_clip(seed=0)
    image = torch.rand(2, 3, 32, 32)
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :3] = torch.tensor([49406, 320, 49407])
    assert next(model.parameters()).dtype == torch.float32
    assert torch.allclose(model.encode_image(image), reference.encode_image(image), atol=1e-3)
    assert torch.allclose(model.encode_text(text), reference.encode_text(text), atol=1e-3)


def test_a_legacy_format_state_dict_still_loads(tmp_path):
    from clipdraw.weights import load_clip_module

    path = tmp_path / "clip-legacy.pt"
    torch.save(tiny_models.make_tiny_clip().state_dict(), path, _use_new_zipfile_serialization=False)
    image = torch.rand(1, 3, 32, 32)
    assert torch.allclose(load_clip_module(path).encode_image(image),
                          tiny_models.make_tiny_clip().encode_image(image), atol=1e-3)


def test_a_torchscript_checkpoint_drives_a_run_on_the_command_line(tmp_path, tiny_files):
    out = tmp_path / "out"
    result = run_cli("a cat", "--clip-model", tiny_files["clip_jit"], "--decoder", tiny_files["decoder"], "--out", out,
                     "--size", 32, "--cutn", 2, "--iters", 1, "--seed", 0, "--device", "cpu", "--quiet", "--no-gif",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "a-cat-0" / "final.png").is_file()


@pytest.mark.parametrize("content", ["a list", "a tensor", "garbage"])
def test_checkpoints_holding_other_things_are_one_line(tmp_path, content):
    from clipdraw.weights import load_clip_module

    path = tmp_path / "other.pt"
    if content == "garbage":
        path.write_bytes(os.urandom(4096))
    else:
        torch.save([torch.zeros(2)] if content == "a list" else torch.zeros(2), path)
    with pytest.raises(ClipdrawError, match="not a CLIP checkpoint") as info:
        load_clip_module(path)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
