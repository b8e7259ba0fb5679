#!/usr/bin/env python3
"""How well does a toy judge CLIP read pictures the way the analytic judge does?

The judge CLIP never guides; it picks the optimizer's result among its frames and scores
`compare` and `probe` reports. This measures, for each judge given (a weights folder holding a
judge.safetensors; "shipped" is the package's own):

* shape on clean renders: for single-object scenes (seed 4242), how often the judge's cosine
  prefers the right one of "a <colour> circle / square / triangle", on colour-shape pairs seen
  in training and on the held-out pairs;
* shape on silhouettes: the held-out pairs' renders as silhouettes, read among the colourless
  "a circle / square / triangle" (what a guide taught silhouettes learnt apart from colour);
* colour and shape named together: for the same scenes of each held-out pair, how often the
  judge's cosine prefers the right one of the twelve "a <colour> <shape>" captions (whether
  it composes a pair no training image showed, or names it as a seen pair);
* ranking the transformer's samples: for each benchmark prompt (toy_success.py's, prompt seed
  999), 8 samples of the toy transformer; among those the analytic judge accepts and rejects,
  how often the judge CLIP scores an accepted one higher (AUC; 0.5 is chance), by its cosine
  and by the contrastive score frames are picked with (clipdraw.picking.FramePicker);
* ranking optimizer frames: the same AUC over the frames that `toy_success.py --dump-frames`
  or `toy_candidates.py` saved (--frames DIR, optional, repeatable), and how many runs end on
  a frame the analytic judge accepts when that judge picks (``FramePicker`` as a toy run builds it:
  the toy defaults' flatness weight, and for two objects each object read alone by that judge and
  the guide of CLIPDRAW_TOY_WEIGHTS or the package; across a run's candidates, the best frame of all, as
  ``--candidates`` keeps). The judge never guides, so re-scoring saved frames is exact.

    python benchmarks/toy_judges.py shipped /path/to/other/weights [--frames DIR ...] [--samples 0]

"guide:FOLDER" (or "guide:shipped") measures a folder's guiding CLIP (clip.safetensors) the
same way, as if it judged.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_picking import ranked_pairs  # noqa: E402
from toy_success import prompt_sets  # noqa: E402


def _images(arrays) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(a) for a in arrays])).permute(0, 3, 1, 2).float() / 255


def _auc(tally: List[float], scores: np.ndarray, accepted: np.ndarray) -> None:
    """Add to ``tally`` [wins, pairs] the accepted-over-rejected pairs of one prompt or run: the
    AUCs here pool the pairs of all of them (``toy_picking.py`` averages per-run AUCs instead)."""
    wins, pairs = ranked_pairs(scores, accepted)
    tally[0] += wins
    tally[1] += pairs


def _single_renders(judge, split: str, n: int):
    """The ``n`` single-object scenes of ``split`` (seed 4242) both measures on clean renders use,
    and the judge's embeddings of their renders."""
    from clipdraw.toy import data  # noqa: PLC0415

    scenes = [data.scene_at(i, 4242, split, "single") for i in range(n)]
    return scenes, judge.encode_image(_images([data.render(s) for s in scenes]))


def shape_accuracy(judge, split: str, n: int = 120) -> float:
    from clipdraw.toy import data  # noqa: PLC0415

    scenes, embeds = _single_renders(judge, split, n)
    texts = {color: judge.encode_text([f"a {color} {shape}" for shape in data.SHAPES])   # once per colour
             for color in {s.objects[0].color for s in scenes}}
    right = 0
    for embed, scene in zip(embeds, scenes):
        right += data.SHAPES[int((texts[scene.objects[0].color] @ embed).argmax())] == scene.objects[0].shape
    return right / n


def silhouette_shape_accuracy(judge, split: str, n: int = 120) -> float:
    """The same scenes as ``shape_accuracy``, shown as silhouettes (``toy.train_clip.silhouettes``,
    as the guide is taught them): how often the judge's cosine prefers the right one of "a
    circle / square / triangle", no colour named."""
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.train_clip import silhouettes  # noqa: PLC0415

    scenes = [data.scene_at(i, 4242, split, "single") for i in range(n)]
    embeds = judge.encode_image(silhouettes(_images([data.render(s) for s in scenes])))
    read = (embeds @ judge.encode_text([f"a {shape}" for shape in data.SHAPES]).T).argmax(1).tolist()
    return sum(data.SHAPES[r] == s.objects[0].shape for r, s in zip(read, scenes)) / n


def pair_accuracy(judge, n: int = 120) -> Dict[str, float]:
    """Per held-out colour-shape pair, the share of its renders whose best caption among all
    twelve "a <colour> <shape>" is the right one."""
    from clipdraw.toy import data  # noqa: PLC0415

    captions = [f"a {color} {shape}" for color in data.COLORS for shape in data.SHAPES]
    scenes, embeds = _single_renders(judge, "heldout", n)
    named = (embeds @ judge.encode_text(captions).T).argmax(1).tolist()
    right: Dict[str, List[bool]] = {f"{c} {s}": [] for c, s in sorted(data.HELDOUT_PAIRS)}
    for index, scene in zip(named, scenes):
        pair = f"{scene.objects[0].color} {scene.objects[0].shape}"
        right[pair].append(captions[index] == f"a {pair}")
    return {pair: sum(hits) / max(len(hits), 1) for pair, hits in right.items()}


def _load(name: str, device: torch.device):
    """A judge CLIP: "shipped", a weights folder's judge, or with "guide:", a folder's guide."""
    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip  # noqa: PLC0415

    folder, model = (name[len("guide:"):], "clip") if name.startswith("guide:") else (name, "judge")
    return ClipModel(load_toy_clip(None if folder == "shipped" else Path(folder), model)).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("judges", nargs="+", help='weights folders with a judge.safetensors, or "shipped"; '
                                                  '"guide:FOLDER" for a folder\'s guide')
    parser.add_argument("--samples", type=int, default=8, help="transformer samples per prompt (0: skip them)")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per group")
    parser.add_argument("--frames", action="append", default=[],
                        help="a folder of dumped optimizer frames (.npz) to rank and pick from as well (repeatable)")
    args = parser.parse_args()

    from clipdraw.config import TOY_DEFAULTS  # noqa: PLC0415
    from clipdraw.engines.transformer import TransformerEngine  # noqa: PLC0415
    from clipdraw.picking import FramePicker, flatness_penalties, toy_object_count  # noqa: PLC0415
    from clipdraw.toy.judge import satisfies  # noqa: PLC0415
    from clipdraw.toy.world import load_toy_models  # noqa: PLC0415

    torch.set_num_threads(1)
    start = time.perf_counter()
    cpu = torch.device("cpu")
    from clipdraw.errors import ClipdrawError  # noqa: PLC0415

    try:
        judges = {name: _load(name, cpu) for name in args.judges}
    except ClipdrawError as error:
        print(f"toy_judges: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    rows: Dict[str, Dict[str, str]] = {name: {} for name in judges}
    for name, judge in judges.items():
        for split, label in (("train", "shape, seen pairs"), ("heldout", "shape, held-out pairs")):
            rows[name][label] = f"{100 * shape_accuracy(judge, split):.0f}%"
        rows[name]["shape on silhouettes, held-out pairs"] = f"{100 * silhouette_shape_accuracy(judge, 'heldout'):.0f}%"
        for pair, share in pair_accuracy(judge).items():
            rows[name][f"{pair}, among 12 captions"] = f"{100 * share:.0f}%"

    engine = TransformerEngine(load_toy_models("cpu")) if args.samples else None
    cosine = {name: [0.0, 0] for name in judges}
    contrastive = {name: [0.0, 0] for name in judges}
    for items in prompt_sets(args.prompts, 999).values() if engine else ():
        for caption, _ in items:
            pictures = [engine.generate(caption, seed, progress=False).image for seed in range(args.samples)]
            accepted = np.array([satisfies(caption, np.asarray(p)) for p in pictures])
            if accepted.all() or not accepted.any():
                continue
            images = _images(pictures)
            for name, judge in judges.items():
                _auc(cosine[name], (judge.encode_image(images) @ judge.encode_text([caption]).T)[:, 0].numpy(), accepted)
                _auc(contrastive[name], np.array(FramePicker([judge], [caption], [1.0]).scores(images)), accepted)
    for name in judges if engine else ():
        rows[name]["transformer samples, cosine AUC"] = f"{cosine[name][0] / max(cosine[name][1], 1):.3f}"
        rows[name]["transformer samples, contrastive AUC"] = f"{contrastive[name][0] / max(contrastive[name][1], 1):.3f}"

    guide = _load("guide:shipped", cpu) if args.frames else None   # reads each object alone beside the judge
    for folder in args.frames:
        frames = {name: [0.0, 0] for name in judges}
        picked = {name: 0 for name in judges}
        paths = sorted(glob.glob(str(Path(folder) / "*.npz")))
        for path in paths:
            dump = np.load(path)
            caption, accepted = str(dump["caption"]), dump["accepted"].reshape(-1)   # candidates' frames in a row
            images = _images(dump["images"].reshape(-1, *dump["images"].shape[-3:]))
            penalties = flatness_penalties(images, toy_object_count(caption))   # no CLIP in them: once for all judges
            for name, judge in judges.items():   # the pick as a toy run makes it, with this judge (frame_pickers)
                picker = FramePicker([judge], [caption], [1.0], flatness_weight=TOY_DEFAULTS["pick_flatness"],
                                     object_clips=[judge, guide], object_weight=TOY_DEFAULTS["pick_objects"])
                clip_scores = picker.clip_scores(images)
                if not accepted.all() and accepted.any():
                    _auc(frames[name], clip_scores.numpy(), accepted)
                score = picker.total(clip_scores, penalties, picker.object_scores(images))
                picked[name] += int(accepted[int(np.argmax(score.numpy()))])
        label = Path(folder).name
        for name in judges:
            rows[name][f"{label}: frames, contrastive AUC"] = f"{frames[name][0] / max(frames[name][1], 1):.3f}"
            rows[name][f"{label}: picks accepted"] = f"{picked[name]} / {len(paths)}"

    columns = list(next(iter(rows.values())))
    print("| judge | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row[c] for c in columns) + " |")
    print(f"\n{args.prompts} prompts per group, {args.samples} transformer samples each; "
          f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
