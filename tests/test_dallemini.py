"""The dalle-mini engine: min-dalle's real classes at tiny widths, saved as the files min-dalle
expects, loaded from clipdraw's cache, sampled, ranked by a tiny CLIP and written as a run.

min-dalle is imported only through ``clipdraw.dallemini.import_min_dalle``: a bare
``import min_dalle`` (even a ``pytest.importorskip`` at collection) would switch autograd off
for every test that runs after this file. Tests that need it are skipped when it is absent
(``pip install -e ".[test]"`` installs it).

Cost: the real VQGAN decoder takes seconds per image on a small CPU, so one test decodes
through it and the others swap its convolutional decoder for ``CheapVQGanDecoder`` (same
contract). torch runs on one thread here: the tiny models are dominated by per-op overhead,
which a second thread on a shared machine only makes worse.
"""

from __future__ import annotations

import importlib.util
import json
import math
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tiny_models
from clipdraw.errors import ClipdrawError
from clipdraw.config import DalleMiniConfig, parse_rerank
from clipdraw.dallemini import MIN_DALLE_URL, check_dtype, fetch_weights, import_min_dalle, weight_files
from clipdraw.engines.dallemini import DalleMiniEngine
from test_downloads import server  # noqa: F401  (the local HTTP server fixture)

HAVE_MIN_DALLE = importlib.util.find_spec("min_dalle") is not None
needs_min_dalle = pytest.mark.skipif(not HAVE_MIN_DALLE,
                                     reason='min-dalle is not installed: pip install -e ".[dallemini]"')
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dallemini_root(tmp_path_factory) -> Path:
    """A cache folder holding tiny dalle-mini files in min-dalle's layout (built once)."""
    return tiny_models.save_tiny_dallemini(tmp_path_factory.mktemp("dallemini-cache"))


def cheap_vqgan(engine: DalleMiniEngine) -> DalleMiniEngine:
    engine.model.detokenizer.decoder = tiny_models.CheapVQGanDecoder()
    return engine


@pytest.fixture(scope="module")
def engine(dallemini_root, tiny_files):
    return cheap_vqgan(DalleMiniEngine.from_files(DalleMiniConfig(), device="cpu", clip_model=str(tiny_files["clip"]),
                                            offline=True, root=dallemini_root))


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (sockets, requests, urllib) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    if importlib.util.find_spec("requests"):
        import requests

        monkeypatch.setattr(requests.sessions.Session, "request", refuse)


# --------------------------------------------------------------------------- settings (no min-dalle needed)


@pytest.mark.parametrize("kwargs,message", [
    (dict(grid=0), "grid must be"),
    (dict(grid=9), "grid must be"),
    (dict(top_k=-1), "top-k"),
    (dict(top_k=2 ** 14 + 1), "top-k"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(temperature=float("nan")), "temperature must be positive"),
    (dict(supercondition=-1.0), "supercondition"),
    (dict(dtype="float64"), "unknown dtype"),
    (dict(rerank="3"), "is not n:k"),
    (dict(rerank="2:3"), "1 <= k <= n"),
    (dict(rerank="4:0"), "1 <= k <= n"),
    (dict(rerank="6:2", grid=2), "multiple of 4"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ClipdrawError, match=message) as info:
        DalleMiniConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_rerank_sets_candidates_keep_and_passes():
    assert parse_rerank("16:4") == (16, 4) and parse_rerank(None) is None
    plain = DalleMiniConfig(grid=3)
    assert (plain.candidates, plain.keep, plain.passes) == (9, 9, 1)
    ranked = DalleMiniConfig(grid=2, rerank="8:3")
    assert ranked.rerank == (8, 3) and (ranked.candidates, ranked.keep, ranked.passes) == (8, 3, 2)


def test_half_precision_needs_cuda():
    check_dtype("float32", torch.device("cpu"))
    with pytest.raises(ClipdrawError, match="needs a CUDA device"):
        check_dtype("bfloat16", torch.device("cpu"))


def test_weight_files_keep_min_dalles_layout(monkeypatch, tmp_path):
    mini, mega = weight_files(mega=False), weight_files(mega=True)
    assert sorted(mini) == ["decoder.pt", "detoker.pt", "encoder.pt", "merges.txt", "vocab.json"]
    assert mini["encoder.pt"].url == MIN_DALLE_URL + "encoder_mini.pt"
    assert mega["encoder.pt"].url == MIN_DALLE_URL + "encoder.pt"
    assert mini["vocab.json"].url == MIN_DALLE_URL + "vocab_mini.json"
    assert mini["detoker.pt"].url == mega["detoker.pt"].url == MIN_DALLE_URL + "detoker.pt"
    monkeypatch.setenv("CLIPDRAW_CACHE", str(tmp_path))
    assert mini["decoder.pt"].path() == tmp_path / "min-dalle" / "dalle_bart_mini" / "decoder.pt"
    assert mega["merges.txt"].path() == tmp_path / "min-dalle" / "dalle_bart_mega" / "merges.txt"
    assert mini["detoker.pt"].path() == tmp_path / "min-dalle" / "vqgan" / "detoker.pt"
    monkeypatch.setenv("CLIPDRAW_MIRROR", "https://mirror.example/files")
    assert mini["encoder.pt"].source_url == "https://mirror.example/files/min-dalle/dalle_bart_mini/encoder.pt"


def test_offline_with_an_empty_cache_names_url_and_place(tmp_path):
    with pytest.raises(ClipdrawError) as info:
        fetch_weights(mega=False, offline=True, root=tmp_path)
    message = str(info.value)
    assert "--offline" in message and "5 min-dalle files" in message
    assert MIN_DALLE_URL + "vocab_mini.json" in message
    assert str(tmp_path / "min-dalle" / "dalle_bart_mini" / "vocab.json") in message
    assert list(tmp_path.iterdir()) == []


def test_download_through_a_mirror_checks_status(server, monkeypatch, tmp_path):  # noqa: F811
    """Files land in the cache layout through clipdraw's downloader; a 404 is an error, not a file."""
    monkeypatch.setenv("CLIPDRAW_MIRROR", server.base)
    cache = tmp_path / "cache"
    routes = {name: f"/{w.filename}" for name, w in weight_files(mega=False).items()}
    for name, route in routes.items():
        server.serve(route, body=f"bytes of {name}\n".encode())
    paths = fetch_weights(mega=False, root=cache)
    assert sorted(server.requests) == sorted(routes.values())
    for name, path in paths.items():
        assert path == cache / weight_files(mega=False)[name].filename
        assert path.read_bytes() == f"bytes of {name}\n".encode()
    assert fetch_weights(mega=False, offline=True, root=cache) == paths
    assert len(server.requests) == len(routes)             # cached: not asked again

    with pytest.raises(ClipdrawError) as info:               # mega's files are not served: 404
        fetch_weights(mega=True, root=cache)
    message = str(info.value)
    assert "HTTP 404" in message and f"{server.base}/min-dalle/dalle_bart_mega/" in message
    assert str(cache / "min-dalle" / "dalle_bart_mega") in message
    assert not any((cache / "min-dalle" / "dalle_bart_mega").glob("*"))   # no error page saved as weights


# --------------------------------------------------------------------------- min-dalle itself


@needs_min_dalle
def test_urls_are_min_dalles():
    assert MIN_DALLE_URL == import_min_dalle().min_dalle.MIN_DALLE_REPO


@needs_min_dalle
def test_import_keeps_grad_mode_and_threads():
    """In a fresh process: clipdraw's import leaves both alone; a bare re-import shows the trap."""
    script = (
        "import importlib, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from clipdraw.dallemini import import_min_dalle\n"
        "import_min_dalle()\n"
        "print(torch.is_grad_enabled(), torch.get_num_threads())\n"
        "importlib.reload(sys.modules['min_dalle.min_dalle'])\n"
        "print(torch.is_grad_enabled())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1", "False"]


@needs_min_dalle
def test_built_from_the_cache_without_network(dallemini_root, tiny_files, no_network):
    """Real classes end to end, the VQGAN included, with every connection refused."""
    engine = DalleMiniEngine.from_files(DalleMiniConfig(), device="cpu", clip_model=str(tiny_files["clip"]),
                                  offline=False, root=dallemini_root)
    assert engine.model.layer_count == tiny_models.TINY_DALLEMINI["layer_count"]
    assert engine.info["dallemini"]["folder"] == str(dallemini_root / "min-dalle" / "dalle_bart_mini")
    result = engine.draw("a red cat", DalleMiniConfig(seed=1, progressive=False), progress=False)
    assert result.image.size == (256, 256) and len(result.frames) == 1 and result.iterations_done == 256
    assert math.isfinite(result.final_similarity)
    assert torch.is_grad_enabled()


@needs_min_dalle
def test_unreadable_files_are_one_line_errors(dallemini_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dallemini_root, root)
    folder = root / "min-dalle" / "dalle_bart_mini"
    (folder / "decoder.pt").write_bytes(b"not a torch file")
    (folder / "decoder.pt.sha256").unlink(missing_ok=True)   # placed by hand: trusted on first use
    with pytest.raises(ClipdrawError, match="cannot read min-dalle decoder"):
        DalleMiniEngine.from_files(DalleMiniConfig(), device="cpu", clip_model=None, offline=True, root=root)
    torch.save({"unrelated.weight": torch.zeros(2)}, folder / "decoder.pt")
    (folder / "decoder.pt.sha256").unlink(missing_ok=True)
    with pytest.raises(ClipdrawError, match="is not a min-dalle decoder"):
        DalleMiniEngine.from_files(DalleMiniConfig(), device="cpu", clip_model=None, offline=True, root=root)


@needs_min_dalle
def test_shapes_frames_and_scores(engine):
    result = engine.draw("a photo of a cat", DalleMiniConfig(seed=0, grid=2), progress=False)
    assert [f.iteration for f in result.frames] == list(range(32, 257, 32))
    assert all(f.image.size == (512, 512) for f in result.frames)
    assert result.image.size == (512, 512) and len(result.images) == 4
    assert all(image.size == (256, 256) for image in result.images)
    assert [c["rank"] for c in result.candidates] == [1, 2, 3, 4]   # no rerank: drawing order
    assert all(math.isfinite(s) for s in result.scores) and all(math.isfinite(f.similarity) for f in result.frames)
    assert result.iterations_done == 256 and not result.interrupted
    summary = result.summary()
    assert summary["kept"] == [0, 1, 2, 3] and summary["settings"]["grid"] == 2 and summary["seconds_per_image"] > 0


@needs_min_dalle
def test_same_seed_same_images_and_the_callers_rng_untouched(engine):
    config = DalleMiniConfig(seed=5, progressive=False)
    state = torch.get_rng_state()
    first = engine.draw("a red dog", config, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    again = engine.draw("a red dog", config, progress=False)
    other = engine.draw("a red dog", DalleMiniConfig(seed=6, progressive=False), progress=False)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other.image.tobytes()


@needs_min_dalle
def test_rerank_keeps_the_best_k_by_clip(engine):
    result = engine.draw("a cat", DalleMiniConfig(seed=2, rerank="3:2", progressive=False), progress=False)
    scores = [c["similarity"] for c in result.candidates]
    assert len(scores) == 3 and len(set(scores)) == 3
    assert result.scores == sorted(scores, reverse=True)[:2]
    ranked = sorted(result.candidates, key=lambda c: -c["similarity"])
    assert [c["rank"] for c in ranked] == [1, 2, None]
    assert result.summary()["kept"] == [c["index"] for c in ranked[:2]]
    assert result.final_similarity == pytest.approx(sum(result.scores) / 2)
    assert result.image.size == (512, 256)                    # the two kept, side by side
    assert [f.iteration for f in result.frames] == [256, 512, 768]
    # The recorded score is CLIP's similarity of that very image (up to its rounding to 8 bits).
    import numpy as np

    pixels = torch.from_numpy(np.array(result.images[0])).permute(2, 0, 1).float().div(255)
    embed = engine.clip.encode_image(pixels[None])
    text = engine.clip.encode_text(["a cat"])
    assert float(embed @ text.T) == pytest.approx(result.scores[0], abs=2e-2)


@needs_min_dalle
def test_optimizer_still_learns_after_a_dallemini_run(engine, tiny_models_cpu):
    from clipdraw.config import GenerationConfig
    from clipdraw.optimize import Optimization
    from clipdraw.prompts import parse_schedule

    threads = torch.get_num_threads()
    engine.draw("a cat", DalleMiniConfig(progressive=False), progress=False)
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    run = Optimization(tiny_models_cpu, parse_schedule("a cat"), GenerationConfig(iters=2, size=32, cutn=2))
    before = run.logits.detach().clone()
    run.step(1)
    assert (run.logits.detach() - before).abs().amax() > 0.5 * run.config.lr   # Adam's first step: lr per entry


@needs_min_dalle
def test_no_autocast_warnings(engine):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.draw("a cat", DalleMiniConfig(progressive=False), progress=False)
    assert not [w for w in caught if "autocast" in str(w.message)], [str(w.message) for w in caught]


@needs_min_dalle
def test_refusals(engine):
    with pytest.raises(ClipdrawError, match="one text"):
        engine.draw("a cat|a dog:0.5", DalleMiniConfig(), progress=False)
    with pytest.raises(ClipdrawError, match="holds dalle-mini"):
        engine.draw("a cat", DalleMiniConfig(mega=True), progress=False)
    bare = DalleMiniEngine(engine.model, clip=None)
    with pytest.raises(ClipdrawError, match="rerank needs CLIP"):
        bare.draw("a cat", DalleMiniConfig(rerank="2:1"), progress=False)


# --------------------------------------------------------------------------- the command


def run_main(args, capsys) -> tuple:
    from clipdraw.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@needs_min_dalle
def test_command_writes_the_run_folder(tmp_path, dallemini_root, tiny_files, monkeypatch, capsys):
    cache = Path(tmp_path / "cache")
    cache.mkdir(exist_ok=True)
    (cache / "min-dalle").symlink_to(dallemini_root / "min-dalle")
    load = DalleMiniEngine.load.__func__
    monkeypatch.setattr(DalleMiniEngine, "load", classmethod(lambda cls, *a, **k: cheap_vqgan(load(cls, *a, **k))))
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["a red cat", "--engine", "dallemini", "--rerank", "2:1", "--seed", 4,
                                     "--clip-model", tiny_files["clip"], "--device", "cpu", "--offline",
                                     "--out", out, "--quiet"], capsys)
    assert code == 0, stderr
    run_dir = out / "a-red-cat-4"
    frames = [f"frame_{i:06d}.png" for i in range(32, 513, 32)]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        frames + ["final.png", "image_01.png", "progress.gif", "run.json"])
    from PIL import Image

    with Image.open(run_dir / "progress.gif") as gif:
        assert gif.n_frames == 16 and gif.size == (256, 256)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["engine"] == "dallemini" and record["seed"] == 4
    assert record["settings"]["rerank"] == [2, 1] and record["settings"]["mega"] is False
    assert len(record["candidates"]) == 2
    best = max(record["candidates"], key=lambda c: c["similarity"])
    assert record["kept"] == [best["index"]] and best["rank"] == 1
    assert record["images"] == [{"file": "image_01.png", "similarity": best["similarity"], "rank": 1}]
    best = best["similarity"]
    assert record["final"]["similarity"] == pytest.approx(best)
    assert record["models"]["dallemini"]["name"] == "dalle-mini" and record["versions"]["min-dalle"]
    assert "final.png" in stdout and "s/image" in stdout


BAD_COMMANDS = [
    (["--rerank", "3"], "is not n:k"),
    (["--rerank", "2:3"], "1 <= k <= n"),
    (["--grid", "2", "--rerank", "6:2"], "multiple of 4"),
    (["--grid", "9"], "grid must be"),
    (["--model", "toy"], "leave out --model toy"),
    (["--dtype", "bfloat16", "--device", "cpu"], "needs a CUDA device"),
    (["--offline", "--device", "cpu"], MIN_DALLE_URL),
]


@needs_min_dalle
@pytest.mark.parametrize("extra,pattern", BAD_COMMANDS, ids=[" ".join(a) for a, _ in BAD_COMMANDS])
def test_bad_commands_are_one_line_and_exit_2(tmp_path, capsys, extra, pattern):
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["a cat", "--engine", "dallemini", "--out", out, *extra], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("clipdraw: error:") and pattern in stderr
    assert not out.exists()


def test_weighted_prompt_is_refused_by_the_command(tmp_path, capsys):
    code, _, stderr = run_main(["a cat|a dog:0.5", "--engine", "dallemini", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "one text" in stderr and len(stderr.strip().splitlines()) == 1


def test_without_min_dalle_one_line_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "min_dalle", None)     # what an absent package looks like to import
    code, _, stderr = run_main(["a cat", "--engine", "dallemini", "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert 'pip install -e ".[dallemini]"' in stderr
    assert not (tmp_path / "o").exists()


@needs_min_dalle
def test_ctrl_c_before_the_first_frame_is_one_line_130_and_leaves_no_run_folder(tmp_path, dallemini_root, tiny_files,
                                                                                monkeypatch, capsys):
    cache = Path(tmp_path / "cache")
    cache.mkdir(exist_ok=True)
    (cache / "min-dalle").symlink_to(dallemini_root / "min-dalle")
    load = DalleMiniEngine.load.__func__

    def interrupted_at_once(cls, *args, **kwargs):
        engine = cheap_vqgan(load(cls, *args, **kwargs))

        def stream(**_):
            raise KeyboardInterrupt
            yield   # a generator, as min-dalle's is

        engine.model.generate_images_stream = stream
        return engine

    monkeypatch.setattr(DalleMiniEngine, "load", classmethod(interrupted_at_once))
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["a red cat", "--engine", "dallemini", "--seed", 4, "--clip-model",
                                     tiny_files["clip"], "--device", "cpu", "--offline", "--out", out, "--quiet"],
                                    capsys)
    assert code == 130 and stdout == ""
    assert stderr.strip().splitlines()[-1] == "clipdraw: interrupted before the first frame: nothing kept"
    assert not (out / "a-red-cat-4").exists()
