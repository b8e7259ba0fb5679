"""Images in, in the toy world: how often the analytic judge accepts what an edit, an image
prompt or an init image gives (issue 18's figures; docs/images-in.md has the results).

    python benchmarks/toy_edits.py --scenes 6 --variant "direction, init-weight 5" ...

Rows:
- edits: a rendered single object, edited in colour ("a red circle" -> "a blue circle") and in
  shape ("a red circle" -> "a red square"), one row per edit setting;
- image prompt: a rendered scene as the only prompt, no text; accepted when the judge reads the
  result as the scene's caption;
- init-image redraw: ``--iters 1`` from a rendered scene; the mean absolute pixel error to the
  dVAE's own redraw, and whether the judge still reads the scene.

Accepted = the analytic judge (``clipdraw.toy.judge``) accepts final.png, the judge CLIP's pick;
"ever" counts runs with some accepted saved frame. Seconds are the median per run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from clipdraw.config import toy_config
from clipdraw.images import read_image
from clipdraw.optimize import generate
from clipdraw.toy.data import COLORS, SHAPES, allowed_pairs, render
from clipdraw.toy.judge import satisfies
from clipdraw.toy.specs import scene_for
from clipdraw.toy.world import load_toy_models

VARIANTS = {   # name -> settings beside init_image and edit_from
    "direction, init-weight 0": dict(edit_method="direction", init_weight=0.0),
    "direction, init-weight 5": dict(edit_method="direction", init_weight=5.0),
    "slerp 0.5, init-weight 5": dict(edit_method="slerp", edit_strength=0.5, init_weight=5.0),
    "slerp 1.0, init-weight 5": dict(edit_method="slerp", edit_strength=1.0, init_weight=5.0),
}


def edits(n: int, seed: int) -> List[Tuple[str, str, str, int]]:
    """(kind, from, to, placement seed): n colour edits and n shape edits of seen pairs."""
    rng = np.random.default_rng(seed)
    pairs = allowed_pairs("train")
    chosen = []
    for kind in ("colour", "shape"):
        while sum(1 for c in chosen if c[0] == kind) < n:
            color, shape = pairs[rng.integers(len(pairs))]
            if kind == "colour":
                new = (str(rng.choice([c for c in COLORS if c != color])), shape)
            else:
                new = (color, str(rng.choice([s for s in SHAPES if s != shape])))
            if new in pairs:
                chosen.append((kind, f"a {color} {shape}", f"a {new[0]} {new[1]}", int(rng.integers(1000))))
    return chosen


def accepted(caption: str, image: Image.Image) -> bool:
    return satisfies(caption, np.asarray(image))


def run(models, prompt: str, settings: dict) -> dict:
    start = time.perf_counter()
    result = generate(models, prompt, toy_config(**settings), progress=False, keep_images=True)
    return {"result": result, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=6, help="edits of each kind (colour, shape), and image prompts")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), default=None,
                        help="edit settings to measure (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load_toy_models("cpu")
    folder = Path(tempfile.mkdtemp(prefix="toy-edits-"))
    rows: Dict[str, dict] = {}
    started = time.perf_counter()

    def scene_file(caption: str, placement: int) -> str:
        path = folder / f"{caption.replace(' ', '-')}-{placement}.png"
        if not path.exists():
            Image.fromarray(render(scene_for(caption, placement))).save(path)
        return str(path)

    jobs = edits(args.scenes, args.seed)
    for name in args.variant or list(VARIANTS):
        for kind, source, target, placement in jobs:
            settings = dict(init_image=scene_file(source, placement), edit_from=source, iters=args.iters,
                            seed=args.seed, **VARIANTS[name])
            done = run(models, target, settings)
            row = rows.setdefault(f"edit {kind}: {name}", {"ok": 0, "ever": 0, "n": 0, "seconds": []})
            row["n"] += 1
            row["ok"] += accepted(target, done["result"].image)
            row["ever"] += any(accepted(target, f.image) for f in done["result"].frames)
            row["seconds"].append(done["seconds"])
            print(f"{name:28s} {source!r} -> {target!r}: {'accepted' if accepted(target, done['result'].image) else 'rejected'}",
                  file=sys.stderr)

    rng = np.random.default_rng(args.seed + 1)
    pairs = allowed_pairs("train")
    for i in range(args.scenes):
        color, shape = pairs[rng.integers(len(pairs))]
        caption = f"a {color} {shape}"
        path = scene_file(caption, int(rng.integers(1000)))
        done = run(models, "", dict(image_prompts=(path,), iters=args.iters, seed=args.seed))
        row = rows.setdefault("image prompt alone", {"ok": 0, "ever": 0, "n": 0, "seconds": []})
        row["n"] += 1
        row["ok"] += accepted(caption, done["result"].image)
        row["ever"] += any(accepted(caption, f.image) for f in done["result"].frames)
        row["seconds"].append(done["seconds"])
        # --iters 1 from the scene: frame 0 is the dVAE's redraw
        redraw = run(models, caption, dict(init_image=path, iters=1, seed=args.seed))["result"]
        first = np.asarray(redraw.frames[0].image, dtype=np.float32) / 255
        source = read_image(path, 64).permute(1, 2, 0).numpy()
        err = rows.setdefault("init image, frame 0 (dVAE redraw)", {"ok": 0, "ever": 0, "n": 0, "seconds": [],
                                                                      "error": []})
        err["n"] += 1
        err["ok"] += accepted(caption, redraw.frames[0].image)
        err["ever"] += accepted(caption, redraw.frames[0].image)
        err["error"].append(float(np.abs(first - source).mean()))

    print(f"\n{args.scenes} scenes per row, {args.iters} iterations, toy defaults otherwise; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("| row | accepted (judge CLIP's pick) | ever accepted | s per run |")
    print("| --- | --- | --- | --- |")
    for name, row in rows.items():
        seconds = f"{statistics.median(row['seconds']):.1f}" if row["seconds"] else "-"
        extra = f" (mean abs. pixel error to the source {statistics.fmean(row['error']):.3f})" if "error" in row else ""
        print(f"| {name}{extra} | {row['ok']}/{row['n']} | {row['ever']}/{row['n']} | {seconds} |")


if __name__ == "__main__":
    main()
