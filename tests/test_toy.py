"""The toy world: data determinism, training, shipped weights, both engines through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipdraw.toy import data
from clipdraw.toy.models import WEIGHTS_DIR, load_weights
from clipdraw.toy.train import TrainConfig, train_all

TINY = TrainConfig(dvae_steps=3, dvae_batch=8, clip_steps=3, clip_batch=16, gpt_images=32, gpt_steps=3, gpt_batch=8)


def test_scenes_are_pure_functions_of_their_arguments():
    a, b = data.scene_at(17, 3, "train"), data.scene_at(17, 3, "train")
    assert a == b and a.caption == b.caption
    assert np.array_equal(data.render(a), data.render(b))
    others = [data.scene_at(17, s, "train") for s in range(4, 10)]
    assert any(o.caption != a.caption for o in others)


def test_held_out_pairs_never_reach_training():
    for scene in data.scenes(1500, 0, "train"):
        assert not any((o.color, o.shape) in data.HELDOUT_PAIRS for o in scene.objects)
    for scene in data.scenes(300, 0, "heldout"):
        assert any((o.color, o.shape) in data.HELDOUT_PAIRS for o in scene.objects)


def test_all_kinds_sizes_and_counts_occur():
    scenes = data.scenes(600, 1, "train")
    assert {s.kind for s in scenes} == set(data.SCENE_KINDS)
    assert {o.size for s in scenes for o in s.objects} == {"small", "large"}
    assert {len(s.objects) for s in scenes if s.kind == "count"} == {2, 3}
    assert {s.relation for s in scenes if s.kind == "relation"} == set(data.RELATIONS)


def test_hard_negatives_are_false_for_their_scene_and_keep_held_out_pairs_unseen():
    from clipdraw.toy.judge import parse_caption, satisfies

    rng = np.random.default_rng(0)
    kinds = set()
    for scene in data.scenes(400, 2, "train"):
        negative = data.hard_negative(scene, rng)
        assert negative != scene.caption and not satisfies(negative, data.render(scene))
        named = {(o.color, o.shape) for o in parse_caption(negative).objects}
        assert not named & data.HELDOUT_PAIRS
        kinds.add(scene.kind)
    assert kinds == set(data.SCENE_KINDS)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-weights")
    summary = train_all(TINY, out=root, progress=False)
    return root, summary


def test_training_writes_half_precision_weights_and_logs(tiny_world):
    root, summary = tiny_world
    assert set(summary["seconds"]) == {"dvae", "clip", "transformer"}
    assert {e["stage"] for e in summary["log"]} == {"dvae", "clip", "transformer"}
    state, meta = load_weights("transformer", root)
    assert meta["image_vocab"] == 128 and "circle" in meta["words"]
    from safetensors import safe_open
    with safe_open(str(root / "dvae.safetensors"), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys() if "weight" in k or k.endswith(".w"))


def test_training_is_deterministic_by_seed(tiny_world, tmp_path):
    root, _ = tiny_world
    train_all(TINY, out=tmp_path, stages=("dvae",), progress=False)
    first, _ = load_weights("dvae", root)
    again, _ = load_weights("dvae", tmp_path)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_stages_trained_one_at_a_time_share_one_log(tmp_path):
    train_all(TINY, out=tmp_path, stages=("dvae",), progress=False)
    train_all(TINY, out=tmp_path, stages=("clip",), progress=False)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert set(log["seconds"]) == {"dvae", "clip"}
    assert [e["stage"] for e in log["log"]] == ["dvae", "dvae", "clip", "clip"]


def test_toy_models_plug_into_both_engines(tiny_world):
    from clipdraw import GenerationConfig, generate
    from clipdraw.toy.engine import SamplingConfig, TransformerEngine, load_toy_models

    root, _ = tiny_world
    models = load_toy_models("cpu", root)
    assert models.decoder.vocab_size == 128 and models.decoder.upsample_factor == 8
    assert models.clip.input_resolution == 64
    result = generate(models, "a red circle", GenerationConfig(iters=4, size=64, cutn=2, save_every=2), progress=False)
    assert result.image.size == (64, 64) and len(result.frames) == 2
    engine = TransformerEngine(models, root)
    one = engine.generate("two blue squares", SamplingConfig(seed=3, save_every=16), progress=False)
    two = engine.generate("two blue squares", SamplingConfig(seed=3, save_every=16), progress=False)
    assert [f.iteration for f in one.frames] == [16, 32, 48, 64]
    assert torch.equal(one.latents, two.latents) and one.latents.shape == (1, 64)


def test_shipped_weights_fit_and_load():
    files = sorted(WEIGHTS_DIR.glob("*.safetensors"))
    assert [f.name for f in files] == ["clip.safetensors", "dvae.safetensors", "transformer.safetensors"]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    from clipdraw.toy.engine import load_toy_models
    models = load_toy_models("cpu")
    tokens = torch.nn.functional.one_hot(torch.zeros(1, 8, 8, dtype=torch.long), 128).permute(0, 3, 1, 2).float()
    assert models.decoder(tokens).shape == (1, 3, 64, 64)


def run_cli(*args, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "clipdraw", *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_toy_cli_writes_the_same_outputs_for_both_paradigms(tiny_world, tmp_path):
    root, _ = tiny_world
    env = {"CLIPDRAW_TOY_WEIGHTS": str(root)}
    result = run_cli("a red circle", "--model", "toy", "--iters", 6, "--save-every", 3, "--cutn", 2, "--seed", 1,
                     "--out", tmp_path / "out", "--quiet", tmp_path=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "a-red-circle-1" / "run.json").read_text())
    assert record["engine"] == "optimize" and record["models"]["decoder"]["name"] == "toy"
    result = run_cli("a red circle", "--model", "toy", "--engine", "transformer", "--seed", 1,
                     "--out", tmp_path / "out", "--quiet", tmp_path=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "out" / "a-red-circle-1-2"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["engine"] == "transformer" and len(record["frames"]) == 8
    assert (run_dir / "progress.gif").exists() and (run_dir / "final.png").exists()


@pytest.mark.parametrize("args,pattern", [
    (["a cat", "--engine", "transformer"], "needs --model toy"),
    (["toy", "train", "--stages", "vae"], "unknown stage"),
    (["toy", "train", "--scale", "0"], "--scale must be positive"),
])
def test_toy_bad_input(tmp_path, args, pattern):
    result = run_cli(*args, tmp_path=tmp_path, CLIPDRAW_TOY_WEIGHTS=str(tmp_path / "none"))
    assert result.returncode == 2 and pattern in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_short_fixed_seed_optimization_draws_what_the_judge_reads():
    """The shipped toy world end to end: within 20 steps the CLIP-guided latents decode to an
    image the analytic judge reads as the prompt, though the first frame does not show it."""
    from clipdraw import GenerationConfig, generate
    from clipdraw.toy.engine import load_toy_models
    from clipdraw.toy.judge import satisfies

    prompt = "a green circle"
    result = generate(load_toy_models("cpu"), prompt, GenerationConfig(iters=20, seed=0, size=64, cutn=8, save_every=1),
                      progress=False)
    verdicts = [satisfies(prompt, frame.image) for frame in result.frames]
    assert not verdicts[0] and any(verdicts)
