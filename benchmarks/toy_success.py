#!/usr/bin/env python3
"""How often does the toy world draw what the prompt asks? Judged by the analytic judge.

Prompts are captions of scenes the models never trained on (prompt seed 999), phrased with
templates that training never used (HELDOUT_TEMPLATES), in four groups: single objects and
two-object relations, each from the colour-shape pairs seen in training and from the held-out
pairs. Each method makes one image per prompt, and the analytic judge (clipdraw.toy.judge, no
learned model) says whether it satisfies the caption:

* optimizer: CLIP-guided dVAE latents at the toy defaults; the result is the frame the toy
  judge CLIP (never a guide) ranks best;
* optimizer, last frame: the same runs' last frame, as if no judge chose;
* optimizer without <trick> (--tricks): the defaults with one measured trick undone, to show
  what each contributes; optimizer with <trick>: one of the peers' tricks that the defaults
  leave off, added;
* optimizer from the transformer's sample (--transformer-start K): the optimizer started from
  the transformer row's tokens (one-hot times K, plus unit noise), the two paradigms in turn;
* transformer: the toy autoregressive model, one sample;
* random tokens: a uniformly random dVAE token grid, decoded (the floor);
* dVAE reconstruction: the scene's own render, encoded and decoded: the ceiling of any method
  that draws through this dVAE.

It also reports the median seconds to the first frame the analytic judge accepts, and the
seconds per run. Work is spread over --workers processes of one thread each.

    python benchmarks/toy_success.py --prompts 20 --tricks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Dict, Tuple

HELDOUT_TEMPLATES = {   # data.py's training templates never use these words
    "single": ("a picture of {a} {color} {shape}", "an image of {a} {color} {shape}",
               "a painting of {a} {color} {shape}", "{a} {color} {shape} in the {position}"),
    "relation": ("a picture of {a1} {c1} {s1} {relation} {a2} {c2} {s2}",
                 "an image of {a1} {c1} {s1} {relation} {a2} {c2} {s2}",
                 "a painting of {a1} {c1} {s1} {relation} {a2} {c2} {s2}"),
}
TRICKS = {   # the toy default each row undoes (clipdraw.config.TOY_DEFAULTS)
    "judge-picked frame": None,   # computed from the same runs: "optimizer, last frame"
    "four candidates": {"candidates": 1, "cutn": 16, "overview": 4, "region_cuts": 8},   # one, with the views of four
    "the pick from a third of the way in": {"pick_from": 0.0},
    "the blank canvas": {"init_image": None},
    "flatness in the pick": {"pick_flatness": 0.0},
    "each object in its half": {"region_weight": 0.0},   # relation prompts only
    "each object read alone in the pick": {"pick_objects": 0.0},   # relation prompts only
    "overview cuts": {"overview": 0},
    "total variation": {"tv_weight": 0.0},
    "straight-through tokens": {"relaxation": "softmax"},
    "large cuts": {"cut_min_scale": 0.5},
    "affine and perspective augmentations": {"augmentations": "noise"},
}
RELATION_SETTINGS = {"region_weight", "pick_objects"}   # settings that only prompts naming two objects read
TRICKS_OFF = {   # the peers' tricks the toy defaults leave off: each row adds one
    "latent EMA (0.9)": {"ema": 0.9},
    "learning-rate decay (cosine)": {"lr_schedule": "cosine"},
}


def phrase(scene, index: int) -> str:
    from clipdraw.toy.data import _article  # noqa: PLC0415

    templates = HELDOUT_TEMPLATES[scene.kind]
    template = templates[index % len(templates)]
    if scene.kind == "single":
        o = scene.objects[0]
        return template.format(a=_article(o.color), color=o.color, shape=o.shape, position=scene.position)
    a, b = scene.objects
    return template.format(a1=_article(a.color), c1=a.color, s1=a.shape, relation=scene.relation,
                           a2=_article(b.color), c2=b.color, s2=b.shape)


def prompt_sets(n: int, seed: int) -> Dict[str, list]:
    """n distinct captions per group, from a seed the models never trained on.

    Prompt i uses template i (cycling); when that template has no new caption left (the three
    held-out pairs give only three single-object captions per template without a position), the
    next template is used, so that 20 prompts per group exist; the first 10 are unchanged."""
    from clipdraw.toy import data  # noqa: PLC0415

    if n > 21:   # distinct held-out single-object captions: 3 templates x 3 pairs + 3 pairs x 4 positions
        raise SystemExit(f"at most 21 prompts per group, got {n}")
    sets = {}
    for kind in ("single", "relation"):
        for split, label in (("train", "seen pairs"), ("heldout", "held-out pairs")):
            chosen: dict = {}
            index = shift = misses = 0
            while len(chosen) < n:
                scene = data.scene_at(index, seed, split, kind)
                index += 1
                caption = phrase(scene, len(chosen) + shift)
                if caption in chosen:
                    misses += 1
                    shift += misses % 500 == 0   # this template is exhausted: the next one
                    continue
                chosen[caption], misses = scene, 0
            sets[f"{kind}, {label}"] = list(chosen.items())
    return sets


_MODELS = _ENCODER = None   # loaded once per worker process


def _load_guide(path: str):
    """A toy CLIP saved as ``clipdraw toy train`` saves one (NAME.safetensors in any folder)."""
    from pathlib import Path  # noqa: PLC0415

    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip  # noqa: PLC0415

    file = Path(path)
    if not file.is_file() or file.suffix != ".safetensors":
        raise ValueError("not a .safetensors file")
    return ClipModel(load_toy_clip(file.parent, file.stem))


def _worker_init(guides: Tuple[str, ...] = ()) -> None:
    global _MODELS, _ENCODER
    import torch  # noqa: PLC0415

    from clipdraw.toy.world import load_toy_models  # noqa: PLC0415

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)   # tiny models' denormal activations are slow on CPU
    from clipdraw.toy.models import load_toy_dvae  # noqa: PLC0415

    _MODELS = load_toy_models("cpu")
    if guides:   # more toy CLIPs guiding beside the shipped one, as one ensemble
        from clipdraw.models import ClipEnsemble  # noqa: PLC0415

        _MODELS.clip = ClipEnsemble([_MODELS.clip, *map(_load_guide, guides)])
    _ENCODER, _ = load_toy_dvae()


def run_task(task: Tuple[str, str, int, str, dict]) -> dict:
    """One (method, group, prompt) -> whether the judge accepts the image, and timings."""
    import torch  # noqa: PLC0415

    from clipdraw.config import toy_config  # noqa: PLC0415
    from clipdraw.optimize import generate  # noqa: PLC0415
    from clipdraw.results import to_pil  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.engines.transformer import TransformerEngine  # noqa: PLC0415
    from clipdraw.toy.judge import satisfies  # noqa: PLC0415

    method, group, index, caption, overrides = task
    models = _MODELS
    out = {"method": method, "group": group, "index": index, "caption": caption}
    start = time.perf_counter()
    if method.startswith("optimizer"):
        overrides = dict(overrides)
        background = overrides.pop("background_start", None)
        from_transformer = overrides.pop("transformer_start", None)
        dump = overrides.pop("dump_frames", None)
        config = replace(toy_config(seed=index), **overrides)
        if dump and os.path.exists(dump_path(dump, out)):
            return read_dump(dump_path(dump, out), out, config.first_pick)
        init = None if background is None else background_logits(background, models.decoder.vocab_size, index)
        if from_transformer is not None:   # the other paradigm's picture (the transformer row's), then CLIP guidance
            sample = TransformerEngine(models).generate(caption, index, progress=False)
            out["transformer_ok"] = bool(satisfies(caption, sample.image))
            grid = int(round(sample.tokens.numel() ** 0.5))
            init = token_logits(sample.tokens.view(grid, grid).cpu(), from_transformer, models.decoder.vocab_size,
                                index)
        result = generate(models, caption, config, progress=False, keep_images=True, init_logits=init)
        seconds = time.perf_counter() - start
        out["ok"] = bool(satisfies(caption, result.image))
        verdicts = [bool(satisfies(caption, f.image)) for f in result.frames]
        out["last_ok"] = verdicts[-1]
        first = next((f.iteration for f, ok in zip(result.frames, verdicts) if ok), None)
        out["first_ok_seconds"] = None if first is None else seconds * first / max(result.iterations_done, 1)
        out["first_ok_iteration"] = first
        out["chosen_iteration"] = result.chosen_frame.iteration
        if dump:
            dump_frames(dump, out, result.frames, verdicts)
    elif method == "transformer":
        engine = TransformerEngine(models)
        out["ok"] = bool(satisfies(caption, engine.generate(caption, index, progress=False).image))
    elif method == "random tokens":
        tokens = torch.randint(models.decoder.vocab_size, (1, 8, 8), generator=torch.Generator().manual_seed(index))
        with torch.no_grad():
            out["ok"] = bool(satisfies(caption, to_pil(models.decoder.decode_tokens(tokens)[0])))
    elif method == "dVAE reconstruction":
        from clipdraw.toy.train import map_pixels  # noqa: PLC0415

        encoder = _ENCODER
        scene = overrides["scene"]
        with torch.no_grad():
            codes = encoder(map_pixels(data.image_batch([scene]))).argmax(1)
            out["ok"] = bool(satisfies(caption, to_pil(models.decoder.decode_tokens(codes)[0])))
    out["seconds"] = time.perf_counter() - start
    return out


def dump_frames(folder: str, run: dict, frames, verdicts) -> None:
    """Every saved frame of one optimizer run, with the scores the run gave it and the analytic
    judge's verdict, as one .npz: the data to try frame pickers on offline
    (benchmarks/toy_picking.py) without rerunning the optimizer."""
    import numpy as np  # noqa: PLC0415

    path = dump_path(folder, run)
    with open(path + ".tmp", "wb") as f:   # whole or not at all
        np.savez_compressed(f, images=np.stack([np.asarray(fr.image) for fr in frames]),
                            iterations=np.array([fr.iteration for fr in frames]),
                            similarity=np.array([fr.similarity for fr in frames]),
                            judge_score=np.array([np.nan if fr.judge_score is None else fr.judge_score
                                                  for fr in frames]),
                            accepted=np.array(verdicts), caption=run["caption"], method=run["method"],
                            group=run["group"], index=run["index"])
    os.replace(path + ".tmp", path)


def dump_path(folder: str, run: dict) -> str:
    name = f"{run['method']}-{run['group']}-{run['index']:03d}".replace(" ", "_").replace(",", "")
    return os.path.join(folder, "".join(c for c in name if c.isalnum() or c in "_-.()") + ".npz")


def dumped_pick(iterations, scores, first_pick: int) -> int:
    """The index of the frame a dumped run picked, by the rule runs pick with
    (``clipdraw.results.best_frame``): its saved frames' iterations and judge scores."""
    import numpy as np  # noqa: PLC0415

    from clipdraw.results import Frame, best_frame  # noqa: PLC0415

    frames = [Frame(int(i), None, 0.0, None if np.isnan(s) else float(s)) for i, s in zip(iterations, scores)]
    return frames.index(best_frame(frames, first_pick))


def read_dump(path: str, out: dict, first_pick: int) -> dict:
    """A run already dumped (an earlier, interrupted benchmark): its verdicts read back, not rerun;
    its seconds unknown."""
    import numpy as np  # noqa: PLC0415

    with np.load(path) as data:
        accepted, iterations, scores = data["accepted"], data["iterations"], data["judge_score"]
    chosen = dumped_pick(iterations, scores, first_pick)   # the run's own pick, by the rule the run used
    first = next((int(i) for i, ok in zip(iterations, accepted) if ok), None)
    return {**out, "ok": bool(accepted[chosen]), "last_ok": bool(accepted[-1]), "first_ok_iteration": first,
            "first_ok_seconds": None, "chosen_iteration": int(iterations[chosen]), "seconds": None, "resumed": True}


def background_logits(scale: float, vocab: int, seed: int):
    """Start latents that decode to the empty background: the dVAE encoder's tokens of a blank
    scene, one-hot times ``scale``, plus the usual unit noise, so that the optimizer paints
    objects onto a clean sheet instead of carving them out of random tokens."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.train import map_pixels  # noqa: PLC0415

    pixels = np.array(Image.new("RGB", (data.IMAGE_SIZE, data.IMAGE_SIZE), data.BACKGROUND))
    blank = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        codes = _ENCODER(map_pixels(blank)).argmax(1)[0]
    return token_logits(codes, scale, vocab, seed)


def token_logits(codes, scale: float, vocab: int, seed: int):
    """Start latents for dVAE ``codes`` (g, g): one-hot times ``scale`` plus unit noise."""
    import torch  # noqa: PLC0415

    from clipdraw.optimize import one_hot_logits  # noqa: PLC0415

    start = one_hot_logits(codes, vocab, scale)
    return start + torch.randn(start.shape, generator=torch.Generator().manual_seed(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20, help="prompts per group")
    parser.add_argument("--seed", type=int, default=999, help="prompt seed (the models trained on seeds 0-13)")
    parser.add_argument("--tricks", action="store_true", help="also a row per trick, the defaults without it")
    parser.add_argument("--groups", default="single,relation", help="kinds of prompt to run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write every run's result here")
    parser.add_argument("--background-start", type=float, action="append", default=[], metavar="K",
                        help="also a row starting from the blank scene's tokens, one-hot times K (repeatable)")
    parser.add_argument("--dump-frames", metavar="DIR",
                        help="write every optimizer run's saved frames, scores and verdicts to DIR (one .npz each); "
                             "runs already there are read back, not rerun")
    parser.add_argument("--optimizer-only", action="store_true",
                        help="skip the transformer, random-token and dVAE rows")
    parser.add_argument("--transformer-start", type=float, action="append", default=[], metavar="K",
                        help="also a row starting from the toy transformer's sample (its row's seed): its tokens "
                             "one-hot times K plus unit noise, then CLIP guidance (repeatable)")
    parser.add_argument("--background-only", action="store_true",
                        help="with --background-start or --transformer-start: skip the toy defaults' optimizer row")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a toy default for every optimizer row (a trial: e.g. --set iters=500)")
    parser.add_argument("--guide", action="append", default=[], metavar="FILE",
                        help="a toy CLIP (.safetensors) that guides beside the shipped one, as an ensemble")
    args = parser.parse_args()
    from clipdraw.errors import ClipdrawError  # noqa: PLC0415
    from clipdraw.evaluate.judge import wilson_interval  # noqa: PLC0415

    for path in args.guide:   # a bad file: one line and exit 2 here, not a traceback from every worker
        try:
            _load_guide(path)
        except (OSError, ValueError, KeyError, ClipdrawError) as error:
            print(f"toy_success: --guide {path}: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    groups = {g: v for g, v in prompt_sets(args.prompts, args.seed).items() if g.split(",")[0] in args.groups}
    trial = {name: _value(value) for name, value in (item.split("=", 1) for item in args.set)}
    methods: Dict[str, dict] = {"optimizer": dict(trial)}
    relation_only = set()   # rows that would repeat the "optimizer" row's runs on single objects
    if args.tricks:
        methods.update({f"optimizer without {name}": {**trial, **undo} for name, undo in TRICKS.items()
                        if undo is not None})
        relation_only = {f"optimizer without {name}" for name, undo in TRICKS.items()
                         if undo is not None and set(undo) <= RELATION_SETTINGS}
        methods.update({f"optimizer with {name}": {**trial, **added} for name, added in TRICKS_OFF.items()})
    methods.update({f"optimizer from background ({k:g})": {**trial, "background_start": k}
                    for k in args.background_start})
    methods.update({f"optimizer from the transformer's sample ({k:g})": {**trial, "transformer_start": k}
                    for k in args.transformer_start})
    if args.background_only and (args.background_start or args.transformer_start):
        del methods["optimizer"]
    if args.dump_frames:
        os.makedirs(args.dump_frames, exist_ok=True)
        methods = {name: {**overrides, "dump_frames": args.dump_frames} for name, overrides in methods.items()}
    tasks = []
    for group, prompts in groups.items():
        for index, (caption, scene) in enumerate(prompts):
            for method, overrides in methods.items():
                if scene.kind == "relation" or method not in relation_only:
                    tasks.append((method, group, index, caption, overrides))
            if args.optimizer_only:
                continue
            for method in ("transformer", "random tokens"):
                tasks.append((method, group, index, caption, {}))
            tasks.append(("dVAE reconstruction", group, index, caption, {"scene": scene}))
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=_worker_init, initargs=(tuple(args.guide),)) as pool:
        results = list(pool.map(run_task, tasks))
    wall = time.perf_counter() - started

    rows = list(methods) + (["optimizer, last frame"] if "optimizer" in methods else []) + \
        ([] if args.optimizer_only else ["transformer", "random tokens", "dVAE reconstruction"])
    table: Dict[str, Dict[str, float]] = {m: {} for m in rows}
    cells: Dict[str, Dict[str, str]] = {m: {} for m in rows}
    for group in groups:
        for method in rows:
            source = "optimizer" if method == "optimizer, last frame" else method
            key = "last_ok" if method == "optimizer, last frame" else "ok"
            hits = [r[key] for r in results if r["method"] == source and r["group"] == group]
            if not hits:   # a relation-only trick on single objects: not run
                table[method][group], cells[method][group] = float("nan"), "-"
                continue
            table[method][group] = sum(hits) / len(hits)
            low, high = wilson_interval(sum(hits), len(hits))
            cells[method][group] = f"{table[method][group]:.0%} ({low:.0%}-{high:.0%})"
    print("| method | " + " | ".join(groups) + " |")
    print("|" + " --- |" * (len(groups) + 1))
    for method in rows:
        print(f"| {method} | " + " | ".join(cells[method][g] for g in groups) + " |")
    print(f"\n(in brackets: the 95% interval, Wilson's, of a share of {args.prompts} prompts)")
    for label in dict.fromkeys(r["method"] for r in results if r["method"].startswith("optimizer")):
        runs = [r for r in results if r["method"] == label]   # one line per optimizer row
        firsts = [r["first_ok_seconds"] for r in runs if r["first_ok_seconds"] is not None]
        passed = sum(r["first_ok_iteration"] is not None for r in runs)   # resumed runs have no seconds
        timed = [r["seconds"] for r in runs if r["seconds"] is not None] or [float("nan")]
        first = (f"median {statistics.median(firsts):.1f} s to the first frame the judge accepts" if firsts
                 else "no timed run had a frame the judge accepts")
        print(f"\n{label}: {statistics.median(timed):.1f} s per run (median, one thread); {first} "
              f"({passed} of {len(runs)} runs had one)")
    print(f"{args.prompts} prompts per group; {wall:.0f} s in all on {args.workers} worker(s)")
    for method in methods:
        refined = [r for r in results if r["method"] == method and "transformer_ok" in r]
        if refined:   # prompt by prompt, against the transformer's own sample
            print(f"{method}: accepted where the transformer's sample was rejected in "
                  f"{sum(r['ok'] and not r['transformer_ok'] for r in refined)}, rejected where it was accepted in "
                  f"{sum(r['transformer_ok'] and not r['ok'] for r in refined)}, of {len(refined)} prompts; "
                  f"the samples alone: {sum(r['transformer_ok'] for r in refined)} accepted")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "success": table, "runs": results}, f, indent=1)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
