"""Guidance settings of the optimizer: cutout sizes and overviews, total variation, EMA frames,
the judge that picks the result among the frames, patience, and how frames are labelled."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipdraw import ClipdrawError, GenerationConfig, generate
from clipdraw.augment import Cutouts
from clipdraw.config import TOY_DEFAULTS, toy_config
from clipdraw.models import ClipModel
from clipdraw.optimize import (Frame, Optimization, best_frame, candidate_score, generate_batch, judged_stale, relax,
                               to_pil, total_variation)
from clipdraw.outputs import RunWriter, make_run_dir
from clipdraw.targets import parse_schedule

FAST = dict(size=32, cutn=2, augmentations="none")


class ScriptedJudge:
    """Stands in for a judge CLIP: its n-th call to encode_image scores every image ``scores[n]``
    (the last score once the script runs out), so that the judge's verdicts are known in advance."""

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def encode_text(self, texts):
        return torch.tensor([[1.0, 0.0]] * len(texts))

    def encode_image(self, images, low_memory=False):
        score = self.scores[min(self.calls, len(self.scores) - 1)]
        self.calls += 1
        return torch.tensor([[score, (1 - score * score) ** 0.5]] * images.shape[0])


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------- settings


def test_new_settings_are_validated_and_toy_config_layers_settings_over_the_toy_defaults():
    for bad in (dict(cut_pow=0), dict(cut_pow=-1.0), dict(ema=1.0), dict(ema=-0.1), dict(overview=-1),
                dict(overview=1.5), dict(patience=-2), dict(patience=2.0), dict(tv_weight=-0.1),
                dict(region_weight=-0.5), dict(region_weight=float("nan")), dict(region_cuts=0),
                dict(shape_weight=-1.0), dict(shape_weight=float("inf")), dict(shape_cuts=0)):
        with pytest.raises(ClipdrawError):
            GenerationConfig(**bad)
    GenerationConfig(cut_pow=0.5, ema=0.9, overview=3, patience=4, tv_weight=0.2, region_weight=2.0,
                     region_cuts=3)   # the same, in range
    toy = toy_config()
    assert {k: getattr(toy, k) for k in TOY_DEFAULTS} == TOY_DEFAULTS
    changed = toy_config(cutn=3, seed=9)
    assert changed.cutn == 3 and changed.seed == 9 and changed.size == TOY_DEFAULTS["size"]
    assert changed.overview == TOY_DEFAULTS["overview"]
    with pytest.raises(ClipdrawError):
        toy_config(ema=2.0)


# --------------------------------------------------------------------------- cutouts


def test_overview_views_are_the_whole_image_resized():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 40, 40)
    whole = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    views = Cutouts(20, 5, min_scale=0.3, overview=2)(images)
    assert views.shape == (10, 3, 20, 20)
    for index in range(10):
        image, place = divmod(index, 5)
        if place < 2:
            assert torch.allclose(views[index], whole[image], atol=1e-5), index
        else:   # crops of at most ~0.3-1 of the side, elsewhere than the whole image
            assert not torch.allclose(views[index], whole[image], atol=1e-2), index
    # More overviews than views: every view is the whole image.
    views = Cutouts(20, 3, min_scale=0.3, overview=7)(images)
    assert torch.allclose(views, whole.repeat_interleave(3, dim=0), atol=1e-5)
    # No overview: the first view is a crop like the others.
    views = Cutouts(20, 3, min_scale=0.3)(images)
    assert not torch.allclose(views[0], whole[0], atol=1e-2)


def crop_sides(cut_pow: float, min_scale: float, cutn: int = 256) -> torch.Tensor:
    """Each cutout's side, as a share of the image side, read off a horizontal ramp image: a
    view's values span the crop's width."""
    ramp = torch.linspace(0, 1, 128).view(1, 1, 1, 128).expand(1, 3, 128, 128).contiguous()
    torch.manual_seed(0)
    views = Cutouts(32, cutn, min_scale=min_scale, cut_pow=cut_pow)(ramp)
    return (views[:, 0, 0, -1] - views[:, 0, 0, 0]) * 32 / 31   # first to last pixel centre: 31/32 of the crop


def test_cut_pow_below_one_favours_large_crops_above_one_small_ones():
    min_scale = 0.2
    means = {}
    for cut_pow in (0.3, 1.0, 3.0):
        sides = crop_sides(cut_pow, min_scale)
        assert sides.min() >= min_scale - 0.03 and sides.max() <= 1.02
        means[cut_pow] = sides.mean().item()
        # E[u ** p] = 1 / (p + 1) for u uniform in [0, 1]
        assert means[cut_pow] == pytest.approx(min_scale + (1 - min_scale) / (cut_pow + 1), abs=0.05)
    assert means[0.3] > means[1.0] + 0.1 > means[3.0] + 0.2


# --------------------------------------------------------------------------- total variation


def test_total_variation_is_zero_on_flat_images_and_grows_with_detail():
    flat = torch.full((2, 3, 16, 16), 0.4)
    assert torch.equal(total_variation(flat), torch.zeros(2))
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[..., ::2] = 1.0   # every horizontal neighbour differs by 1, no vertical one does
    assert total_variation(stripes).item() == pytest.approx(1.0)
    torch.manual_seed(0)
    noise = torch.rand(1, 3, 16, 16)
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    both = total_variation(torch.cat([flat[:1], ramp, noise]))
    assert both.shape == (3,) and 0 == both[0] < both[1] < both[2]


def test_tv_weight_adds_its_penalty_to_the_loss(tiny_models_cpu):
    decoder = tiny_models_cpu.decoder
    grid = 32 // decoder.upsample_factor
    start = torch.randn(decoder.vocab_size, grid, grid, generator=torch.Generator().manual_seed(1))
    config = GenerationConfig(iters=1, seed=0, save_every=1, **FAST)
    plain = generate(tiny_models_cpu, "a kite", config, progress=False, init_logits=start)
    weighted = generate(tiny_models_cpu, "a kite", replace(config, tv_weight=0.5), progress=False, init_logits=start)
    with torch.no_grad():
        first_image = decoder(relax(start[None], config, 0, torch.Generator()))
    penalty = 0.5 * total_variation(first_image).item()
    assert penalty > 0
    assert weighted.losses[0] - plain.losses[0] == pytest.approx(penalty, rel=1e-3)
    assert weighted.similarities == pytest.approx(plain.similarities)   # the same views of the same image


# --------------------------------------------------------------------------- EMA


def test_ema_frames_differ_but_the_optimization_and_its_determinism_do_not(tiny_models_cpu):
    config = GenerationConfig(iters=4, seed=3, save_every=2, lr=0.3, **FAST)
    plain = generate(tiny_models_cpu, "a tree", config, progress=False)
    averaged = [generate(tiny_models_cpu, "a tree", replace(config, ema=0.7), progress=False, keep_images=True)
                for _ in range(2)]
    first, again = averaged
    assert [f.iteration for f in first.frames] == [f.iteration for f in plain.frames] == [2, 4]
    assert all(np.array_equal(pixels(a.image), pixels(b.image)) for a, b in zip(first.frames, again.frames))
    assert first.losses == again.losses
    # The frames show the average, lagging behind the latents being optimized ...
    assert not np.array_equal(pixels(first.frames[-1].image), pixels(plain.frames[-1].image))
    # ... which the average does not touch: the same steps as without it.
    assert first.losses == plain.losses and torch.equal(first.latents, plain.latents)


# --------------------------------------------------------------------------- frame labels


def test_a_frame_is_decoded_at_the_temperature_of_the_last_step_taken(tiny_models_cpu, monkeypatch):
    import clipdraw.optimize as optimize

    calls = []
    real_scores = optimize.tempered_scores

    def recording_scores(logits, config, step, generators, noisy=True):
        calls.append((step, noisy))
        return real_scores(logits, config, step, generators, noisy)

    config = GenerationConfig(iters=3, seed=0, save_every=1, relaxation="gumbel", tau=2.0, tau_end=0.5, **FAST)
    with monkeypatch.context() as patch:
        patch.setattr(optimize, "tempered_scores", recording_scores)
        result = generate(tiny_models_cpu, "a lamp", config, progress=False)
    assert [f.iteration for f in result.frames] == [1, 2, 3]
    snapshots = [i for i, (_, noisy) in enumerate(calls) if not noisy]
    assert len(snapshots) == 3
    for frame, at in zip(result.frames, snapshots):
        step_taken = calls[at - 1]
        assert step_taken[1] and calls[at][0] == step_taken[0] == frame.iteration - 1
    # End to end: the last frame is the final latents at the last step's temperature, not a
    # temperature past the end of the schedule.
    with torch.no_grad():
        decode = tiny_models_cpu.decoder
        expected = to_pil(decode(relax(result.latents, config, config.iters - 1, torch.Generator(), noisy=False))[0])
        beyond = to_pil(decode(relax(result.latents, config, config.iters, torch.Generator(), noisy=False))[0])
    assert np.abs(pixels(result.frames[-1].image).astype(int) - pixels(expected).astype(int)).max() <= 1
    assert not np.array_equal(pixels(expected), pixels(beyond))   # the test can tell the two apart


@pytest.mark.parametrize("when", ["after-update", "before-update"])
def test_an_interrupted_run_labels_its_last_frame_with_the_updates_applied(tiny_models_cpu, monkeypatch, when):
    real_step = Optimization.step
    stop_at = 3

    def interrupted_step(self, step):
        if step == stop_at and when == "before-update":
            raise KeyboardInterrupt
        out = real_step(self, step)
        if step == stop_at:   # the update is applied, its loss never recorded
            raise KeyboardInterrupt
        return out

    config = GenerationConfig(iters=50, seed=2, save_every=10, lr=0.3, relaxation="straight-through", **FAST)
    with monkeypatch.context() as patch:
        patch.setattr(Optimization, "step", interrupted_step)
        result = generate(tiny_models_cpu, "a ship", config, progress=False)
    applied = stop_at if when == "after-update" else stop_at - 1
    assert result.interrupted and result.iterations_done == applied
    assert [f.iteration for f in result.frames] == [applied] and len(result.losses) == stop_at - 1
    # The frame shows exactly what a run of that many steps ends with.
    finished = generate(tiny_models_cpu, "a ship", replace(config, iters=applied), progress=False)
    assert finished.frames[-1].iteration == applied
    assert np.array_equal(pixels(result.frames[-1].image), pixels(finished.frames[-1].image))
    assert torch.equal(result.latents, finished.latents)


# --------------------------------------------------------------------------- the judge


def frame(iteration, score=None):
    return Frame(iteration, Image.new("RGB", (4, 4), (iteration, 0, 0)), 0.0, score)


def test_best_frame_and_staleness_rules():
    assert best_frame([]) is None
    plain = [frame(1), frame(2), frame(3)]
    assert best_frame(plain) is plain[-1] and not judged_stale(plain, 1)
    judged = [frame(1, 0.2), frame(2, 0.6), frame(3, 0.1), frame(4, 0.6), frame(5, 0.3)]
    assert best_frame(judged) is judged[1]   # the earliest of equals
    assert judged_stale(judged, 3) and not judged_stale(judged, 4)
    assert not judged_stale(judged[:2], 1) and judged_stale(judged[:3], 1)

    # From first_pick on: the best of the later frames, though an earlier one scores higher...
    assert best_frame(judged, first_pick=3) is judged[3] and best_frame(judged, first_pick=5) is judged[4]
    # ... and every frame when none was saved there yet (a run stopped or cut short before it).
    assert best_frame(judged[:2], first_pick=3) is judged[1]
    # Patience counts from the pick's start: no stop before a frame there was saved.
    assert not judged_stale(judged[:3], 1, first_pick=4) and judged_stale(judged, 1, first_pick=4)
    # Candidates rank by the same pick.
    assert candidate_score(judged) == 0.6 and candidate_score(judged, first_pick=5) == 0.3


def test_pick_from_is_a_share_of_the_run_and_checked():
    assert GenerationConfig(iters=300, pick_from=0.33).first_pick == 99
    assert GenerationConfig(iters=1000).first_pick == 0
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ClipdrawError, match="pick-from"):
            GenerationConfig(pick_from=bad)


SCORES = [0.1, 0.4, 0.8, 0.3, 0.8, 0.2]   # a tie for best: the earlier frame wins


@pytest.fixture(scope="module")
def judged_runs(tiny_models_cpu):
    """The same run with the scripted judge and without one."""
    config = GenerationConfig(iters=len(SCORES), seed=4, save_every=1, lr=0.3, **FAST)
    judged = generate(replace(tiny_models_cpu, judge=ScriptedJudge(SCORES)), "a red apple", config, progress=False,
                      keep_images=True)
    plain = generate(tiny_models_cpu, "a red apple", config, progress=False, keep_images=True)
    return config, judged, plain


def test_the_judges_best_frame_is_the_result_and_the_judge_never_guides(judged_runs):
    _, judged, plain = judged_runs
    scores = [f.judge_score for f in judged.frames]
    assert scores == pytest.approx(SCORES)
    best = judged.frames[scores.index(max(scores))]
    assert best is not judged.frames[-1]
    assert judged.chosen_frame is best and judged.image is best.image
    assert judged.final_similarity == best.similarity
    summary = judged.summary()["judge"]
    assert summary["best_iteration"] == best.iteration and summary["best_score"] == best.judge_score
    assert summary["last_iteration"] == judged.frames[-1].iteration and summary["stopped_early"] is False
    # Without a judge: the last frame, no judge entry.
    assert all(f.judge_score is None for f in plain.frames)
    assert plain.chosen_frame is plain.frames[-1] and plain.image is plain.frames[-1].image
    assert "judge" not in plain.summary()
    # The judge only watches: the same steps, frames and guide scores as without it.
    assert judged.losses == plain.losses
    assert [f.similarity for f in judged.frames] == [f.similarity for f in plain.frames]
    assert all(np.array_equal(pixels(a.image), pixels(b.image)) for a, b in zip(judged.frames, plain.frames))


def test_the_pick_from_a_share_of_the_run_on_makes_the_result_and_keeps_its_image(tiny_models_cpu):
    """pick_from=0.6 of six iterations: the best of frames 4 to 6 is the result (iteration 5,
    scored 0.8 like frame 3, which lies before the pick), with its image kept."""
    config = GenerationConfig(iters=len(SCORES), seed=4, save_every=1, lr=0.3, pick_from=0.6, **FAST)
    assert config.first_pick == 4
    result = generate(replace(tiny_models_cpu, judge=ScriptedJudge(SCORES)), "a red apple", config, progress=False)
    chosen = result.chosen_frame
    assert (chosen.iteration, chosen.judge_score) == (5, pytest.approx(0.8))
    assert result.image is chosen.image and result.summary()["judge"]["best_iteration"] == 5
    assert [f.iteration for f in result.frames if f.image is not None] == [5, 6]   # the chosen and the last
    every = generate(replace(tiny_models_cpu, judge=ScriptedJudge(SCORES)), "a red apple",
                     replace(config, pick_from=0.0), progress=False)
    assert every.chosen_frame.iteration == 3


def write_run(tmp_path, config, result, name):
    writer = RunWriter(make_run_dir(tmp_path, name, config.seed), name, asdict(config), {}, gif=False)
    for kept in result.frames:
        writer.add_frame(kept)
    writer.finish(result)
    return writer.run_dir, json.loads((writer.run_dir / "run.json").read_text())


def test_run_json_names_the_judges_pick_as_final_and_the_last_frame_as_last(judged_runs, tmp_path):
    config, judged, plain = judged_runs
    run_dir, record = write_run(tmp_path, config, judged, "judged")
    best = judged.chosen_frame
    assert record["final"]["iteration"] == best.iteration != judged.frames[-1].iteration
    assert record["final"]["judge_score"] == pytest.approx(best.judge_score) and record["final"]["chosen_by"] == "judge"
    assert record["final"]["similarity"] == pytest.approx(best.similarity)
    assert record["last"] == record["frames"][-1] and record["last"]["iteration"] == judged.frames[-1].iteration
    assert [f["judge_score"] for f in record["frames"]] == pytest.approx(SCORES)
    assert record["judge"]["best_iteration"] == best.iteration
    with Image.open(run_dir / "final.png") as final:
        final.load()
        assert final.text["iteration"] == str(best.iteration) and "judge_score" in final.text
        assert np.array_equal(pixels(final), pixels(Image.open(run_dir / f"frame_{best.iteration:06d}.png")))

    run_dir, record = write_run(tmp_path, config, plain, "plain")
    assert record["final"]["iteration"] == plain.frames[-1].iteration == record["last"]["iteration"]
    assert "chosen_by" not in record["final"] and "judge_score" not in record["final"] and "judge" not in record
    with Image.open(run_dir / "final.png") as final:
        assert np.array_equal(pixels(final), pixels(plain.frames[-1].image))


def test_a_clip_judge_scores_each_frame_with_its_own_embeddings(tiny_models_cpu):
    import tiny_models

    rng = torch.get_rng_state()
    judge = ClipModel(tiny_models.make_tiny_clip(seed=1))
    torch.set_rng_state(rng)
    config = GenerationConfig(iters=3, seed=0, save_every=1, lr=0.3, **FAST)
    result = generate(replace(tiny_models_cpu, judge=judge), "a green boat", config, progress=False, keep_images=True)
    text = judge.encode_text(["a green boat"])
    for kept in result.frames:
        image = torch.from_numpy(pixels(kept.image).copy()).permute(2, 0, 1).float()[None] / 255
        with torch.no_grad():
            expected = (judge.encode_image(image) @ text.T).item()
        assert kept.judge_score == pytest.approx(expected, abs=1e-2)
    assert any(abs(f.judge_score - f.similarity) > 1e-3 for f in result.frames)   # another model than the guide


# --------------------------------------------------------------------------- candidates


class RowJudge(ScriptedJudge):
    """A scripted judge that scores each image of a call apart: call n scores row r ``scores[n][r]``."""

    def encode_image(self, images, low_memory=False):
        row = torch.tensor(self.scores[min(self.calls, len(self.scores) - 1)][:images.shape[0]])
        self.calls += 1
        return torch.stack([row, (1 - row * row).sqrt()], 1)


def test_candidates_keep_the_one_whose_best_frame_the_judge_ranks_highest(tiny_models_cpu):
    # Two images of three candidates each, two saved frames: image 0's candidates peak at
    # 0.2, 0.5, 0.9 (the third wins), image 1's at 0.6, 0.2, 0.25 (the first wins).
    script = [[0.1, 0.5, 0.2, 0.6, 0.1, 0.2], [0.2, 0.4, 0.9, 0.1, 0.2, 0.25]]
    config = GenerationConfig(iters=4, seed=3, save_every=2, batch=2, candidates=3, lr=0.3, **FAST)
    seen = []
    results = generate_batch(replace(tiny_models_cpu, judge=RowJudge(script)), "a cup", config, progress=False,
                             on_frame=lambda i, frame: seen.append((i, frame.iteration, frame.judge_score)))
    assert [r.candidate for r in results] == [2, 0] and [r.config.seed for r in results] == [3, 4]
    assert results[0].candidate_scores == pytest.approx([0.2, 0.5, 0.9])
    assert results[1].candidate_scores == pytest.approx([0.6, 0.2, 0.25])
    assert [f.judge_score for f in results[0].frames] == pytest.approx([0.2, 0.9])
    assert [f.judge_score for f in results[1].frames] == pytest.approx([0.6, 0.1])
    assert results[0].chosen_frame is results[0].frames[1] and results[1].chosen_frame is results[1].frames[0]
    # Only the kept candidate's frames reach on_frame, once the judge has chosen; its images stay.
    assert [(i, it) for i, it, _ in seen] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert [s for _, _, s in seen] == pytest.approx([0.2, 0.9, 0.6, 0.1])
    assert results[1].image is not None and results[1].image is results[1].frames[0].image
    assert results[0].summary()["candidates"] == {"chosen": 2, "scores": results[0].candidate_scores}
    assert "candidates" not in generate(tiny_models_cpu, "a cup", GenerationConfig(iters=1, **FAST),
                                        progress=False).summary()


def test_the_first_candidate_starts_as_its_seed_alone_and_the_others_elsewhere(tiny_models_cpu):
    schedule = parse_schedule("a cat")
    torch.manual_seed(0)
    rows = Optimization(tiny_models_cpu, schedule, GenerationConfig(seed=7, batch=2, candidates=3, **FAST)).logits
    starts = {}
    for seed in (7, 8, 9):
        torch.manual_seed(seed)
        starts[seed] = Optimization(tiny_models_cpu, schedule, GenerationConfig(seed=seed, **FAST)).logits
    assert torch.equal(rows[0:1], starts[7]) and torch.equal(rows[3:4], starts[8])   # each image's first candidate
    others = [rows[r] for r in (1, 2, 4, 5)]
    assert all(not torch.equal(a, b) for k, a in enumerate(others) for b in others[k + 1:] + list(starts.values()))
    with pytest.raises(ClipdrawError, match="candidates"):
        GenerationConfig(candidates=0)


def test_without_a_judge_candidates_are_ranked_by_the_guides_last_similarity(tiny_models_cpu):
    config = GenerationConfig(iters=3, seed=1, save_every=3, candidates=3, lr=0.3, **FAST)
    result = generate(tiny_models_cpu, "a red apple", config, progress=False)
    assert result.candidate_scores[result.candidate] == max(result.candidate_scores)
    assert result.frames[-1].similarity == pytest.approx(max(result.candidate_scores))
    assert len(set(result.candidate_scores)) == 3


# --------------------------------------------------------------------------- patience


def test_patience_stops_when_the_judges_best_frame_is_that_many_frames_old(tiny_models_cpu):
    scores = [0.1, 0.5, 0.4, 0.3, 0.2, 0.1]
    patience, save_every = 2, 2
    best_index = scores.index(max(scores))
    stop_frame = best_index + patience            # index of the frame that makes the best one stale
    config = GenerationConfig(iters=40, seed=0, save_every=save_every, patience=patience, **FAST)
    result = generate(replace(tiny_models_cpu, judge=ScriptedJudge(scores)), "a cup", config, progress=False)
    assert result.stopped_early and not result.interrupted
    assert result.iterations_done == (stop_frame + 1) * save_every < config.iters
    assert len(result.losses) == result.iterations_done == result.frames[-1].iteration
    assert [f.judge_score for f in result.frames] == pytest.approx(scores[:stop_frame + 1])
    assert result.chosen_frame is result.frames[best_index] and result.image is result.frames[best_index].image
    assert result.summary()["judge"]["stopped_early"] is True
    # Without patience the same judge lets the run go to the end.
    whole = generate(replace(tiny_models_cpu, judge=ScriptedJudge(scores)), "a cup",
                     replace(config, iters=8 * save_every, patience=0), progress=False)
    assert whole.iterations_done == 8 * save_every and not whole.stopped_early


def test_patience_running_out_at_the_last_iteration_is_no_early_stop(tiny_models_cpu):
    config = GenerationConfig(iters=6, seed=0, save_every=2, patience=2, **FAST)
    result = generate(replace(tiny_models_cpu, judge=ScriptedJudge([0.5, 0.4, 0.3])), "a cup", config, progress=False)
    assert result.iterations_done == config.iters
    assert not result.stopped_early


def test_the_transformer_prior_of_toy_routes_reads_tokens_as_the_transformer_does():
    """benchmarks/toy_routes.py's prior scores relaxed tokens through the toy transformer's own
    layers: on one-hot tokens it must be the transformer's cross-entropy, and its gradient must
    reach every token (as target and as context)."""
    token_nll = toy_routes().token_nll
    from clipdraw.toy.models import load_toy_gpt

    gpt, tokenizer = load_toy_gpt()
    words = tokenizer.encode(["a red circle", "a large blue square on the left"])
    tokens = torch.randint(gpt.image_vocab, (2, gpt.image_tokens), generator=torch.Generator().manual_seed(0))
    one_hot = F.one_hot(tokens, gpt.image_vocab).float().requires_grad_(True)
    nll = token_nll(gpt, words, one_hot)
    expected = F.cross_entropy(gpt(words, tokens).transpose(1, 2), tokens, reduction="none").mean(1)
    assert torch.allclose(nll, expected, atol=1e-5)
    nll.sum().backward()
    assert (one_hot.grad.abs().sum(-1) > 0).all()


@functools.lru_cache(maxsize=None)
def script(relative: str):
    """A script of benchmarks/ or experiments/ (scripts, not packages) as a module, loaded once."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_routes():
    return script("benchmarks/toy_routes.py")


def test_the_perspective_views_paint_black_corners_unless_padded_with_the_border():
    """docs/toy-guidance.md ("Squares"): kornia's perspective warp fills what it uncovers with
    black, which toy_routes' ``views --perspective-padding border`` replaces by the nearest edge."""
    import kornia.augmentation as K

    plain = torch.full((4, 3, 32, 32), 0.94)
    torch.manual_seed(0)
    assert (K.RandomPerspective(distortion_scale=0.4, p=1.0)(plain) < 0.5).any()
    torch.manual_seed(0)
    padded = toy_routes().border_perspective(0.4, 1.0)(plain)
    assert torch.allclose(padded, plain, atol=1e-4)
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32).contiguous()
    assert not torch.allclose(toy_routes().border_perspective(0.4, 1.0)(ramp), ramp, atol=1e-2)   # it still warps


# --------------------------------------------------------------------------- regions


def test_a_relation_prompt_names_each_object_with_its_half():
    from clipdraw.regions import Region, relation_regions

    assert relation_regions("a picture of a red circle above a blue square") == [
        Region("a picture of a red circle on the top", "top"), Region("a blue square on the bottom", "bottom")]
    assert relation_regions("a red square right of a green circle.") == [
        Region("a red square on the right", "right"), Region("a green circle on the left", "left")]
    assert [r.position for r in relation_regions("a cat to the left of a dog")] == ["left", "right"]
    assert [r.position for r in relation_regions("a sun below a cloud")] == ["bottom", "top"]
    for plain in ("a red circle", "a red circle on the top", "a cat above a dog above a bird", "above a dog",
                  "a dog above", "a gloved hand", "a leftover sandwich"):
        assert relation_regions(plain) == [], plain


def test_a_region_shows_its_half_and_the_fill_elsewhere():
    from clipdraw.regions import half_picture

    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    fill = torch.full((3, 8, 8), 0.25)
    for position, kept in (("top", (slice(None), slice(0, 4), slice(None))),
                           ("bottom", (slice(None), slice(4, None), slice(None))),
                           ("left", (slice(None), slice(None), slice(0, 4))),
                           ("right", (slice(None), slice(None), slice(4, None)))):
        region = half_picture(position, fill, 1.0, None)
        mask = region.mask
        assert mask.sum() == 32 and torch.all(mask[(0,) + kept] == 1)
        shown = region.shown(images)
        assert torch.equal(shown[(slice(None),) + kept], images[(slice(None),) + kept])
        assert torch.all((shown == images) | (shown == 0.25))
        assert int((shown == 0.25).sum()) >= 2 * 3 * 32          # the other half is the fill
        grad, = torch.autograd.grad(shown.sum(), images)
        assert torch.equal(grad, mask.expand_as(grad))            # only the region's half is asked for


def test_region_weight_adds_the_half_pictures_loss_for_a_relation_prompt_only(tiny_models_cpu):
    from clipdraw.regions import relation_regions

    decoder, clip = tiny_models_cpu.decoder, tiny_models_cpu.clip
    grid = 32 // decoder.upsample_factor
    start = torch.randn(decoder.vocab_size, grid, grid, generator=torch.Generator().manual_seed(1))
    # every view the whole picture, no augmentation: the views are known without the random crops
    config = GenerationConfig(iters=1, seed=0, save_every=1, overview=2, region_cuts=2, **FAST)
    relation = "a kite above a boat"
    plain = generate(tiny_models_cpu, relation, config, progress=False, init_logits=start)
    weighted = generate(tiny_models_cpu, relation, replace(config, region_weight=0.5), progress=False,
                        init_logits=start)
    with torch.no_grad():
        image = decoder(relax(start[None], config, 0, torch.Generator()))
        expected = 0.0
        for region in relation_regions(relation):
            mask = torch.zeros_like(image[:, :1])
            mask[..., :16, :] = 1 if region.position == "top" else 0
            mask[..., 16:, :] = 1 if region.position == "bottom" else 0
            shown = image * mask + 0.5 * (1 - mask)   # no start image: the other half is grey
            view = F.interpolate(shown, size=clip.input_resolution, mode="bilinear", align_corners=False)
            cosine = (clip.encode_image(view) @ clip.encode_text([region.text]).T).item()
            expected += 0.5 * -cosine
    assert weighted.losses[0] - plain.losses[0] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert weighted.similarities == pytest.approx(plain.similarities)   # the whole picture's views are the same
    assert weighted.losses[0] != plain.losses[0]
    # A prompt that states no relation runs exactly as without the setting.
    single = generate(tiny_models_cpu, "a kite", config, progress=False, init_logits=start)
    single_weighted = generate(tiny_models_cpu, "a kite", replace(config, region_weight=0.5), progress=False,
                               init_logits=start)
    assert single_weighted.losses == single.losses
    assert np.array_equal(pixels(single_weighted.image), pixels(single.image))


def test_without_colour_words_captions_a_picture_as_the_toy_world_captions_its_silhouettes():
    from clipdraw.shapes import without_colour_words
    from clipdraw.toy import data

    assert without_colour_words("a red circle above a Blue square") == "a circle above a square"
    assert without_colour_words("a kite over the bluest sea") == "a kite over the bluest sea"   # whole words only
    for index in range(60):   # every kind of toy caption: each of its colour words goes, nothing else
        scene = data.scene_at(index, 5)
        expected = scene.caption
        for colour in {o.color for o in scene.objects}:
            expected = expected.replace(colour + " ", "")
        assert without_colour_words(scene.caption) == expected


def test_a_soft_silhouette_is_the_ground_where_nothing_is_drawn_and_ink_where_a_shape_is():
    from clipdraw.shapes import FULL_INK_DISTANCE, SILHOUETTE_INK, border_ground, soft_silhouettes

    ground = torch.full((3, 8, 8), 0.9)
    images = ground.expand(2, 3, 8, 8).clone()
    images[0, :, 2:5, 2:5] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)   # a red square: far from the ground
    images[1, 0, 6, 6] = 0.9 - FULL_INK_DISTANCE / 2                       # a faint speck: half ink
    images.requires_grad_(True)
    shown = soft_silhouettes(images, ground)
    ink = torch.tensor(SILHOUETTE_INK).view(3, 1, 1) / 255
    assert torch.allclose(shown[0, :, 2:5, 2:5], ink.expand(3, 3, 3))
    assert torch.allclose(shown[0, :, 0, 0], ground[:, 0, 0])               # the ground stays
    assert torch.allclose(shown[1, :, 6, 6], (ground[:, 0, 0] + ink[:, 0, 0]) / 2)
    assert torch.equal(shown[0], shown[0].detach().clone())
    grad, = torch.autograd.grad(shown[1].sum(), images)
    assert grad[1, 0, 6, 6] != 0 and grad[1, 0, 0, 0] == 0   # the speck can still move; the ground is flat there
    assert torch.equal(border_ground(images.detach())[:, :, 0, 0], torch.full((2, 3), 0.9))


def test_shape_weight_adds_the_silhouettes_loss_for_a_prompt_that_names_a_colour_only(tiny_models_cpu):
    from clipdraw.shapes import border_ground, soft_silhouettes

    decoder, clip = tiny_models_cpu.decoder, tiny_models_cpu.clip
    grid = 32 // decoder.upsample_factor
    start = torch.randn(decoder.vocab_size, grid, grid, generator=torch.Generator().manual_seed(1))
    # every view the whole picture, no augmentation: the views are known without the random crops
    config = GenerationConfig(iters=1, seed=0, save_every=1, overview=2, shape_cuts=2, **FAST)
    plain = generate(tiny_models_cpu, "a red kite", config, progress=False, init_logits=start)
    weighted = generate(tiny_models_cpu, "a red kite", replace(config, shape_weight=0.5), progress=False,
                        init_logits=start)
    with torch.no_grad():
        image = decoder(relax(start[None], config, 0, torch.Generator()))
        shown = soft_silhouettes(image, border_ground(image))   # no start image: each picture's border colour
        view = F.interpolate(shown, size=clip.input_resolution, mode="bilinear", align_corners=False)
        expected = 0.5 * -(clip.encode_image(view) @ clip.encode_text(["a kite"]).T).item()
    assert weighted.losses[0] - plain.losses[0] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert weighted.similarities == pytest.approx(plain.similarities)   # the picture's own views are the same
    # A prompt that names no colour runs exactly as without the setting.
    uncoloured = generate(tiny_models_cpu, "a kite", config, progress=False, init_logits=start)
    uncoloured_weighted = generate(tiny_models_cpu, "a kite", replace(config, shape_weight=0.5), progress=False,
                                   init_logits=start)
    assert uncoloured_weighted.losses == uncoloured.losses
    assert np.array_equal(pixels(uncoloured_weighted.image), pixels(uncoloured.image))


class _ReadingJudge:
    """A stand-in judge CLIP whose embeddings are one-hot colour-shape names: it reads each image
    with the analytic judge and names it so, or, where ``rename`` says, mostly by another name
    and a little by the true one (a binding the test chooses)."""

    def __init__(self, rename=None):
        from clipdraw.toy import data

        # colour-shape names, then the colourless ones a silhouette is read by
        self.captions = [f"a {c} {s}" for c in data.COLORS for s in data.SHAPES] + [f"a {s}" for s in data.SHAPES]
        self.rename = rename or {}

    def encode_text(self, texts):
        return torch.stack([F.one_hot(torch.tensor(self.captions.index(t)), len(self.captions)) for t in texts]).float()

    def encode_image(self, images):
        from clipdraw.toy.judge import detect

        from clipdraw.shapes import SILHOUETTE_INK
        from clipdraw.toy import data

        rows = []
        for image in (images.permute(0, 2, 3, 1) * 255).round().byte().numpy():
            ink = np.all(image == SILHOUETTE_INK, axis=-1)
            image[ink] = data.COLORS["red"]   # a silhouette: its shape read in a colour the judge knows
            found = detect(image)[0]
            name = f"a {found.shape}" if ink.any() else f"a {found.color} {found.shape}"
            rows.append(self.encode_text([self.rename[name]])[0] + 0.5 * self.encode_text([name])[0]
                        if name in self.rename else self.encode_text([name])[0])
        return torch.stack(rows)


def test_toy_judges_names_each_held_out_pair_among_the_twelve_captions():
    """benchmarks/toy_judges.py's ``pair_accuracy``: a judge that reads every render right names
    each held-out pair right; one that reads blue squares as red squares first names none right,
    though among the blue shapes alone (``shape_accuracy``) it would still pick the square."""
    toy_judges = script("benchmarks/toy_judges.py")
    right = toy_judges.pair_accuracy(_ReadingJudge(), n=30)
    assert right == {"blue square": 1.0, "green triangle": 1.0, "yellow circle": 1.0}
    bound = _ReadingJudge({"a blue square": "a red square"})
    assert toy_judges.pair_accuracy(bound, n=30) == {"blue square": 0.0, "green triangle": 1.0, "yellow circle": 1.0}
    assert toy_judges.shape_accuracy(bound, "heldout", n=30) == 1.0
    # On silhouettes no colour is left to bind: the shapes are read right, and a judge that reads
    # every square's silhouette as a circle gets the held-out pairs' squares wrong.
    from clipdraw.toy import data

    assert toy_judges.silhouette_shape_accuracy(bound, "heldout", n=30) == 1.0
    squares = sum(data.scene_at(i, 4242, "heldout", "single").objects[0].shape == "square" for i in range(30))
    blind = _ReadingJudge({"a square": "a circle"})
    assert toy_judges.silhouette_shape_accuracy(blind, "heldout", n=30) == pytest.approx(1 - squares / 30)
    assert 0 < squares < 30
