#!/usr/bin/env python3
"""Which frame picker turns the optimizer's passes through an accepted frame into results?

Reads the frames that ``benchmarks/toy_success.py --dump-frames DIR`` wrote (every saved frame
of every optimizer run, with the analytic judge's verdict), scores each frame with each
candidate picker, and reports, per start and prompt group, how often the picked frame is one the
analytic judge accepts, beside the ceiling (some frame accepted) and the first picker (the
judge CLIP's raw cosine, "current" when this benchmark was written). The toy defaults' pick is
the row "FramePicker, iteration >= 100 (the toy default, --pick-from 0.33)", built as a toy run builds
it (``clipdraw.picking.frame_pickers``, the package's TOY_DEFAULTS: for two objects, each object read
alone by the judge and the guide). The pickers never
see the verdicts: they may use the toy CLIPs (guide and judge), the prompt, the frames and
generic image statistics.

    python benchmarks/toy_success.py --prompts 20 --groups single --background-start 3 \\
        --optimizer-only --dump-frames /tmp/pk/single
    python benchmarks/toy_picking.py /tmp/pk/single [--blank-frame-0]
    python benchmarks/toy_candidates.py --prompts 20 --candidates 4 --set cutn=4 --set overview=1 \\
        --dump-frames /tmp/pk/candidates
    python benchmarks/toy_picking.py /tmp/pk/candidates --across

Measured in docs/toy-guidance.md ("Picking the frame").
"""

from __future__ import annotations

import argparse
import glob
import os
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

NEUTRAL = ("an image", "a picture", "a photo", "a drawing")
SHIPPED_FLATNESS = 20.0   # the flatness weight of the rows that run clipdraw.picking.FramePicker itself


def load_runs(folders: List[str]) -> List[dict]:
    runs = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
            with np.load(path) as data:
                runs.append({key: data[key] for key in data.files})
            for key in ("caption", "method", "group"):
                runs[-1][key] = str(runs[-1][key])
    return runs


def shifted_views(images):
    """Deterministic views of (N, 3, H, W) images: the image, four 3-pixel shifts (edges
    repeated) and four corner crops of 7/8 of the side, resized back."""
    import torch.nn.functional as F  # noqa: PLC0415

    size = images.shape[-1]
    padded = F.pad(images, (3, 3, 3, 3), mode="replicate")
    views = [images] + [padded[..., 3 + dy:3 + dy + size, 3 + dx:3 + dx + size]
                        for dx, dy in ((-3, 0), (3, 0), (0, -3), (0, 3))]
    crop = size * 7 // 8
    for y0, x0 in ((0, 0), (0, size - crop), (size - crop, 0), (size - crop, size - crop)):
        views.append(F.interpolate(images[..., y0:y0 + crop, x0:x0 + crop], size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True))
    return views


def features(runs: List[dict], bank: List[str]) -> None:
    """Adds to each run, per frame: both CLIPs' cosines with the prompt, its twins, neutral
    captions and a bank of toy captions (plain and averaged over ``shifted_views``), the toy
    transformer's log-likelihood of the frame's dVAE tokens given the prompt and given each twin,
    and the frame statistics."""
    import torch  # noqa: PLC0415

    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.config import TOY_DEFAULTS  # noqa: PLC0415
    from clipdraw.picking import (FramePicker, flatness_penalties, flatness_statistics, toy_object_count,
                                  toy_twin_captions)  # noqa: PLC0415
    from clipdraw.dvae import map_pixels  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip, load_toy_dvae, load_toy_gpt, weights_dir  # noqa: PLC0415

    torch.set_num_threads(1)
    root = weights_dir()
    encoder, _ = load_toy_dvae(root)
    gpt, tokenizer = load_toy_gpt(root)
    clips = {"guide": ClipModel(load_toy_clip(root)), "judge": ClipModel(load_toy_clip(root, "judge"))}
    for run in runs:
        caption = run["caption"]
        twins = toy_twin_captions(caption)
        extras = extra_object_captions(caption)
        texts = [caption, *twins, *NEUTRAL, *bank, *extras]
        images = torch.from_numpy(run["images"]).permute(0, 3, 1, 2).float() / 255
        views = shifted_views(images)
        run["twins"] = twins
        for name, clip in clips.items():
            with torch.no_grad():
                text = clip.encode_text(texts)
                cos = torch.stack([clip.encode_image(v) @ text.T for v in views])   # (views, F, T)
            run[f"{name}_scale"] = float(clip.model.logit_scale.exp())
            ends = np.cumsum([1, len(twins), len(NEUTRAL), len(bank), len(extras)])
            for tag, block in (("", cos[0]), ("_aug", cos.mean(0))):
                block = block.numpy()
                run[f"{name}{tag}_prompt"] = block[:, 0]
                for part, start, end in zip(("twins", "neutral", "bank", "extras"), ends[:-1], ends[1:]):
                    run[f"{name}{tag}_{part}"] = block[:, start:end]
            run[f"{name}_aug_min"] = cos[:, :, 0].min(0).values.numpy()
            run[f"{name}_alone"] = objects_alone(run, clip, run[f"{name}_scale"])
            run[f"{name}_silhouette"] = silhouette_reading(images, caption, clip, run[f"{name}_scale"])
        with torch.no_grad():   # the toy transformer's log p(frame's tokens | caption): a model unlike the CLIPs
            codes = encoder(map_pixels(images)).argmax(1).flatten(1)
            likelihood = [torch.log_softmax(gpt(text.expand(len(codes), -1), codes), -1)
                          .gather(-1, codes[..., None])[..., 0].sum(1) for text in tokenizer.encode([caption, *twins])]
        run["transformer_prompt"] = likelihood[0].numpy()
        run["transformer_twins"] = torch.stack(likelihood[1:], 1).numpy()
        picker = FramePicker([clips["judge"]], [caption], [1.0], flatness_weight=SHIPPED_FLATNESS)
        default = FramePicker([clips["judge"]], [caption], [1.0], flatness_weight=TOY_DEFAULTS["pick_flatness"],
                              object_clips=[clips["judge"], clips["guide"]], object_weight=TOY_DEFAULTS["pick_objects"])
        judge_part, penalties = picker.clip_scores(images), flatness_penalties(images, picker.objects)
        run["shipped"] = picker.total(judge_part, penalties).numpy()
        # as frame_pickers builds it for a toy run: the same judge term and statistics, each weighted its own way
        run["toy_default"] = default.total(judge_part, penalties, default.object_scores(images)).numpy()
        both = FramePicker([clips["judge"], clips["guide"]], [caption], [1.0], flatness_weight=SHIPPED_FLATNESS)
        run["judge_and_guide"] = np.array(both.scores(images))
        stats = [flatness_statistics(image, toy_object_count(caption)) for image in run["images"]]
        for key in stats[0]:
            run[key] = np.array([s[key] for s in stats])


def silhouette_reading(images, caption: str, clip, scale: float) -> np.ndarray:
    """Per frame, log P(the prompt without colours | the frame's silhouette) among that prompt
    with one shape word changed ("a square in the left" against "a circle in the left", ...):
    the shapes read apart from the colours, as the guide was taught silhouettes
    (``toy.train_clip.silhouettes``; docs/toy-guidance.md, "Silhouettes in the loss")."""
    import re  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from clipdraw.shapes import without_colour_words  # noqa: PLC0415
    from clipdraw.toy.data import SHAPES  # noqa: PLC0415
    from clipdraw.toy.train_clip import silhouettes  # noqa: PLC0415

    bare = without_colour_words(caption)
    found = list(re.finditer(rf"\b({'|'.join(SHAPES)})", bare))
    twins = [bare[:m.start()] + other + bare[m.end():] for m in found for other in SHAPES if other != m.group(1)]
    if not twins:
        return np.zeros(len(images))
    with torch.no_grad():
        cos = clip.encode_image(silhouettes(images)) @ clip.encode_text([bare, *twins]).T
    return torch.log_softmax(cos * scale, -1)[:, 0].numpy()


def objects_alone(run: dict, clip, scale: float) -> np.ndarray:
    """Per frame, how well each object the prompt names is read off one foreground part shown
    alone (``clipdraw.picking.read_objects_alone``; here for one-object prompts too). A CLIP that
    cannot read a relation may still read each object. ``scale``: the CLIP's softmax temperature."""
    import torch  # noqa: PLC0415

    from clipdraw.picking import _NOUN, read_objects_alone, toy_twin_captions  # noqa: PLC0415

    nouns = [m.group(0) for m in _NOUN.finditer(run["caption"])]
    if not nouns:
        return np.zeros(len(run["images"]))
    with torch.no_grad():
        texts = [clip.encode_text([noun, *toy_twin_captions(noun)]) for noun in nouns]
    return read_objects_alone(clip, texts, scale, run["images"]).numpy()


def extra_object_captions(caption: str) -> List[str]:
    """For a one-object prompt: the same object with a second one beside it (every relation,
    every colour and shape), phrased as the prompt is: captions of frames with stray patches."""
    from clipdraw.picking import _NOUN  # noqa: PLC0415
    from clipdraw.toy.data import COLORS, RELATIONS, SHAPES  # noqa: PLC0415

    nouns = list(_NOUN.finditer(caption))
    if len(nouns) != 1:
        return []
    match = nouns[0]
    head = caption[:match.end()]
    return [f"{head} {relation} a {color} {shape}" for relation in RELATIONS for color in COLORS
            for shape in SHAPES]


def stability(run: dict) -> np.ndarray:
    """Minus the mean pixel change to the neighbouring frames: high where the run has settled."""
    images = run["images"].astype(np.float32)
    change = np.abs(np.diff(images, axis=0)).mean((1, 2, 3))
    before = np.concatenate([[change[0]], change])
    after = np.concatenate([change, [change[-1]]])
    return -(before + after) / 2


def log_softmax_first(cos: np.ndarray, others: np.ndarray, scale: float) -> np.ndarray:
    logits = np.concatenate([cos[:, None], others], axis=1) * scale
    top = logits.max(1, keepdims=True)
    return logits[:, 0] - (top[:, 0] + np.log(np.exp(logits - top).sum(1)))


def contrast(run: dict, name: str, tag: str = "", scale=None) -> np.ndarray:
    return log_softmax_first(run[f"{name}{tag}_prompt"], run[f"{name}{tag}_twins"],
                             run[f"{name}_scale"] if scale is None else scale)


def smooth(score: np.ndarray) -> np.ndarray:
    padded = np.concatenate([score[:1], score, score[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3


def later(score: np.ndarray, run: dict, after: int) -> np.ndarray:
    return np.where(run["iterations"] >= after, score, -np.inf)


def zscore(score: np.ndarray) -> np.ndarray:
    return (score - score.mean()) / (score.std() + 1e-9)


PICKERS: Dict[str, Callable[[dict], np.ndarray]] = {
    "judge cosine (current)": lambda r: r["judge_prompt"],
    "FramePicker(judge), flatness 20 (clipdraw.picking)": lambda r: r["shipped"],
    "FramePicker(judge + guide, their CLIP terms summed), flatness 20": lambda r: r["judge_and_guide"],
    "FramePicker, smoothed over 3 frames": lambda r: smooth(r["shipped"]),
    "FramePicker, iteration >= 100 (the toy default, --pick-from 0.33)": lambda r: later(r["toy_default"], r, 100),
    "last frame": lambda r: np.arange(len(r["iterations"]), dtype=float),
    "guide cosine": lambda r: r["guide_prompt"],
    "judge - mean neutral": lambda r: r["judge_prompt"] - r["judge_neutral"].mean(1),
    "judge - mean bank": lambda r: r["judge_prompt"] - r["judge_bank"].mean(1),
    "judge softmax over bank": lambda r: log_softmax_first(r["judge_prompt"], r["judge_bank"], r["judge_scale"]),
    "judge contrastive (twins)": lambda r: contrast(r, "judge"),
    "judge contrastive, scale 100": lambda r: contrast(r, "judge", scale=100.0),
    "judge margin to best twin": lambda r: r["judge_prompt"] - r["judge_twins"].max(1),
    "guide contrastive (twins)": lambda r: contrast(r, "guide"),
    "judge + guide contrastive": lambda r: contrast(r, "judge") + contrast(r, "guide"),
    "min(judge, guide) contrastive": lambda r: np.minimum(contrast(r, "judge"), contrast(r, "guide")),
    "judge cosine, 9 views": lambda r: r["judge_aug_prompt"],
    "judge contrastive, 9 views": lambda r: contrast(r, "judge", "_aug"),
    "judge + guide contrastive, 9 views": lambda r: contrast(r, "judge", "_aug") + contrast(r, "guide", "_aug"),
    "judge + guide cosine": lambda r: r["judge_prompt"] + r["guide_prompt"],
    "judge contrastive, smoothed": lambda r: smooth(contrast(r, "judge")),
    "judge contrastive, iteration >= 100": lambda r: later(contrast(r, "judge"), r, 100),
    "judge contrastive - stray": lambda r: contrast(r, "judge") - 2.0 * r["stray"],
    "judge + guide contrastive - stray": lambda r: contrast(r, "judge") + contrast(r, "guide") - 2.0 * r["stray"],
    "judge + guide contrastive, 9 views - stray": lambda r: contrast(r, "judge", "_aug") + contrast(r, "guide", "_aug")
    - 2.0 * r["stray"],
    "z(judge contr.) + z(guide contr.)": lambda r: zscore(contrast(r, "judge")) + zscore(contrast(r, "guide")),
    "fewest stray pixels": lambda r: -r["stray"],
    "purest colour": lambda r: -r["off_colour"],
    "judge contrastive, twins + extra objects": lambda r: log_softmax_first(
        r["judge_prompt"], np.concatenate([r["judge_twins"], r["judge_extras"]], 1), r["judge_scale"]),
    "judge + guide contr., twins + extra objects": lambda r: sum(log_softmax_first(
        r[f"{n}_prompt"], np.concatenate([r[f"{n}_twins"], r[f"{n}_extras"]], 1), r[f"{n}_scale"])
        for n in ("judge", "guide")),
    "most stable frame": stability,
    "judge contrastive, iteration >= 150": lambda r: later(contrast(r, "judge"), r, 150),
    "judge cosine, iteration >= 150": lambda r: later(r["judge_prompt"], r, 150),
    "judge + guide contrastive - stray, iteration >= 100": lambda r: later(
        contrast(r, "judge") + contrast(r, "guide") - 2.0 * r["stray"], r, 100),
    "judge + guide contrastive + 0.1 stability": lambda r: contrast(r, "judge") + contrast(r, "guide")
    + 0.1 * stability(r),
    "judge contrastive - 5 off-colour": lambda r: contrast(r, "judge") - 5.0 * r["off_colour"],
    "judge contrastive - 20 off-colour": lambda r: contrast(r, "judge") - 20.0 * r["off_colour"],
    "judge + guide contrastive - 5 off-colour": lambda r: contrast(r, "judge") + contrast(r, "guide")
    - 5.0 * r["off_colour"],
    "judge + guide contrastive - 20 off-colour": lambda r: contrast(r, "judge") + contrast(r, "guide")
    - 20.0 * r["off_colour"],
    "judge + guide contr. - 20 (off-colour + stray)": lambda r: contrast(r, "judge") + contrast(r, "guide")
    - 20.0 * (r["off_colour"] + r["stray"]),
    "least off-colour + stray": lambda r: -(r["off_colour"] + r["stray"]),
    "least off-colour + stray + missing": lambda r: -(r["off_colour"] + r["stray"] + r["missing"]),
    "judge contr. - 10 (off-colour + stray)": lambda r: contrast(r, "judge") - 10.0 * (r["off_colour"] + r["stray"]),
    "judge contr. - 50 (off-colour + stray)": lambda r: contrast(r, "judge") - 50.0 * (r["off_colour"] + r["stray"]),
    "judge cosine - 10 (off-colour + stray)": lambda r: r["judge_prompt"] - 10.0 * (r["off_colour"] + r["stray"]),
    "judge + guide contr. - 5 (off-colour + stray)": lambda r: contrast(r, "judge") + contrast(r, "guide")
    - 5.0 * (r["off_colour"] + r["stray"]),
    "judge + guide contr. - 50 (off-colour + stray)": lambda r: contrast(r, "judge") + contrast(r, "guide")
    - 50.0 * (r["off_colour"] + r["stray"]),
    "judge contr. - 20 (off-colour + stray)": lambda r: contrast(r, "judge") - 20.0 * (r["off_colour"] + r["stray"]),
    "judge cosine - 10 (off-colour + stray + missing)": lambda r: r["judge_prompt"]
    - 10.0 * (r["off_colour"] + r["stray"] + r["missing"]),
    "guide contr. - 20 (off-colour + stray)": lambda r: contrast(r, "guide") - 20.0 * (r["off_colour"] + r["stray"]),
    "judge cosine - 2 (off-colour + stray)": lambda r: r["judge_prompt"] - 2.0 * (r["off_colour"] + r["stray"]),
    "guide cosine - 2 (off-colour + stray)": lambda r: r["guide_prompt"] - 2.0 * (r["off_colour"] + r["stray"]),
    "judge + guide cosine - 2 (off-colour + stray)": lambda r: r["judge_prompt"] + r["guide_prompt"]
    - 2.0 * (r["off_colour"] + r["stray"]),
    "judge + guide contr. (twins + extras) - 20 (off-colour + stray)": lambda r: sum(log_softmax_first(
        r[f"{n}_prompt"], np.concatenate([r[f"{n}_twins"], r[f"{n}_extras"]], 1), r[f"{n}_scale"])
        for n in ("judge", "guide")) - 20.0 * (r["off_colour"] + r["stray"]),
    "judge, each object alone": lambda r: r["judge_alone"],
    "guide, each object alone": lambda r: r["guide_alone"],
    "FramePicker + judge, each object alone, iteration >= 100": lambda r: later(r["shipped"] + r["judge_alone"], r, 100),
    "FramePicker + judge and guide, each object alone, iteration >= 100": lambda r: later(
        r["shipped"] + r["judge_alone"] + r["guide_alone"], r, 100),
    "judge, the silhouette read among shape twins": lambda r: r["judge_silhouette"],
    "guide, the silhouette read among shape twins": lambda r: r["guide_silhouette"],
    "toy default + judge's silhouette reading, iteration >= 100": lambda r: later(
        r["toy_default"] + r["judge_silhouette"], r, 100),
    "toy default + guide's silhouette reading, iteration >= 100": lambda r: later(
        r["toy_default"] + r["guide_silhouette"], r, 100),
    "transformer log-likelihood given the prompt": lambda r: r["transformer_prompt"],
    "transformer posterior among the twins": lambda r: log_softmax_first(
        r["transformer_prompt"], r["transformer_twins"], 1.0),
}


def ranked_pairs(score: np.ndarray, accepted: np.ndarray) -> Tuple[float, int]:
    """(wins, pairs) over the (accepted, rejected) pairs of one run's frames or one prompt's
    pictures: a win when the accepted one scores higher, half a win for a tie."""
    good, bad = score[accepted.astype(bool)], score[~accepted.astype(bool)]
    good, bad = np.nan_to_num(good, neginf=-1e9)[:, None], np.nan_to_num(bad, neginf=-1e9)[None, :]
    return float((good > bad).sum() + 0.5 * (good == bad).sum()), good.size * bad.size


def within_run_auc(score: np.ndarray, accepted: np.ndarray) -> float:
    """How often an accepted frame outscores a rejected one of the same run: a picker's skill
    measured on every frame, not only on the one it picks. This page's "frame AUC" is its mean
    over the runs that have both; ``toy_judges.py`` pools the pairs of all runs instead."""
    wins, pairs = ranked_pairs(score, accepted)
    return wins / pairs


def pick(score: np.ndarray) -> int:
    """The best-scored frame, the earliest of equals (as clipdraw.results.best_frame)."""
    return int(np.flatnonzero(score == score.max())[0])


def blank_first(run: dict) -> None:
    """Prepends to ``run`` an empty frame of the toy background at iteration 0, rejected."""
    from clipdraw.toy.data import BACKGROUND  # noqa: PLC0415

    blank = np.broadcast_to(np.array(BACKGROUND, np.uint8), run["images"].shape[1:])
    run["images"] = np.concatenate([blank[None], run["images"]])
    run["iterations"] = np.concatenate([[0], run["iterations"]])
    run["accepted"] = np.concatenate([[False], run["accepted"]])


def window_min(score: np.ndarray) -> np.ndarray:
    """Each frame's score as the lowest of it and its two neighbours: a frame counts only when
    the frames around it agree."""
    padded = np.concatenate([score[:1], score, score[-1:]])
    return np.minimum(np.minimum(padded[:-2], padded[1:-1]), padded[2:])


def best_frames(candidates: List[dict]) -> List[np.ndarray]:
    """Each candidate's best frame by the shipped pick, as float pixels."""
    return [run["images"][pick(run["shipped"])].astype(np.float32) for run in candidates]


def distances_to_others(views: List[np.ndarray]) -> List[float]:
    """Each view's mean absolute difference to the others, summed over them."""
    return [float(sum(np.abs(a - b).mean() for b in views)) for a in views]


def _frame_picker(score: Callable[[dict], np.ndarray]) -> Callable[[List[dict]], Tuple[int, int]]:
    def choose(candidates: List[dict]) -> Tuple[int, int]:
        scores = [score(run) for run in candidates]
        j = max(range(len(candidates)), key=lambda k: (scores[k].max(), -k))
        return j, pick(scores[j])
    return choose


def _candidate_then_frame(rank: Callable[[dict], float]) -> Callable[[List[dict]], Tuple[int, int]]:
    def choose(candidates: List[dict]) -> Tuple[int, int]:
        j = max(range(len(candidates)), key=lambda k: (rank(candidates[k]), -k))
        return j, pick(candidates[j]["shipped"])
    return choose


def silhouette(image: np.ndarray, size: int = 16) -> np.ndarray:
    """The foreground's mask cropped to its bounding box and resized to size x size: its shape,
    wherever it was drawn."""
    from PIL import Image  # noqa: PLC0415

    from clipdraw.picking import foreground  # noqa: PLC0415

    mask = foreground(image)[1]
    if not mask.any():
        return np.zeros((size, size), np.float32)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8) * 255
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR), np.float32) / 255


def _consensus(represent: Callable[[np.ndarray], np.ndarray], weight: Optional[float] = None
               ) -> Callable[[List[dict]], Tuple[int, int]]:
    """The candidate whose best frame, as ``represent`` shows it, is nearest the other
    candidates' (what most of them drew); with ``weight``, the best score less ``weight`` x that
    distance averaged over every candidate (itself included, at 0) instead. Then that
    candidate's best frame."""
    def choose(candidates: List[dict]) -> Tuple[int, int]:
        distance = distances_to_others([represent(frame) for frame in best_frames(candidates)])
        if weight is None:
            j = int(np.argmin(distance))
        else:
            j = int(np.argmax([run["shipped"].max() - weight * d / len(candidates)
                               for run, d in zip(candidates, distance)]))
        return j, pick(candidates[j]["shipped"])
    return choose


def _silhouette_of(frame: np.ndarray) -> np.ndarray:
    return silhouette(frame.astype(np.uint8))


# Pickers across a prompt's candidates: (candidate, frame) from every candidate's frames.
ACROSS: Dict[str, Callable[[List[dict]], Tuple[int, int]]] = {
    "FramePicker across every frame (--candidates)": _frame_picker(lambda r: r["shipped"]),
    "FramePicker, smoothed over 3 frames": _frame_picker(lambda r: smooth(r["shipped"])),
    "FramePicker, lowest of 3 neighbouring frames": _frame_picker(lambda r: window_min(r["shipped"])),
    "FramePicker, lowest of 3, iteration >= 100": _frame_picker(lambda r: later(window_min(r["shipped"]), r, 100)),
    "candidate of the best median frame, its best frame": _candidate_then_frame(lambda r: float(np.median(r["shipped"]))),
    "candidate of the best mean of its top 5 frames": _candidate_then_frame(
        lambda r: float(np.sort(r["shipped"])[-5:].mean())),
    "consensus: best frame nearest the others' best frames": _consensus(lambda frame: frame),
    "shape consensus: best frame's silhouette nearest the others'": _consensus(_silhouette_of),
    "best score - 5 x silhouette distance to the others": _consensus(_silhouette_of, 5.0),
    "best score - 20 x silhouette distance to the others": _consensus(_silhouette_of, 20.0),
}


def across_table(runs: List[dict]) -> None:
    """Per prompt group: how often each picker across a prompt's candidates picks an accepted
    frame, beside the first candidate alone and the ceilings."""
    prompts: Dict[tuple, List[dict]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r["method"]):
        prompts[(run["group"], int(run["index"]))].append(run)
    groups = sorted({g for g, _ in prompts})
    rows = {"some frame accepted": lambda c: any(r["accepted"].any() for r in c),
            "some candidate's own pick accepted": lambda c: any(r["accepted"][pick(r["shipped"])] for r in c),
            "first candidate alone": lambda c: bool(c[0]["accepted"][pick(c[0]["shipped"])])}
    def accepted(choose: Callable[[List[dict]], Tuple[int, int]]) -> Callable[[List[dict]], bool]:
        def hit(candidates: List[dict]) -> bool:
            j, frame = choose(candidates)   # once per prompt
            return bool(candidates[j]["accepted"][frame])
        return hit

    rows.update({name: accepted(choose) for name, choose in ACROSS.items()})
    count = len(next(iter(prompts.values())))
    print(f"{count} candidates a prompt\n")
    print("| picker | " + " | ".join(groups) + " | all |")
    print("|" + " --- |" * (len(groups) + 2))
    for name, hit in rows.items():
        cells = [[hit(c) for (g, _), c in prompts.items() if g == group] for group in groups]
        print(f"| {name} | " + " | ".join(f"{sum(x)} / {len(x)}" for x in cells)
              + f" | {sum(map(sum, cells))} / {sum(map(len, cells))} |")


def toy_caption_bank(n: int) -> List[str]:
    from clipdraw.toy import data  # noqa: PLC0415

    return list(dict.fromkeys(data.scene_at(i, 4242, "all").caption for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders of .npz runs (toy_success.py --dump-frames)")
    parser.add_argument("--blank-frame-0", action="store_true",
                        help="put a blank frame (rejected) before each run's frames, as a blank start's frame 0 "
                             "would be: a picker must not choose it")
    parser.add_argument("--picker", action="append", default=[], metavar="NAME",
                        help="a picker to run, by its name in PICKERS (repeatable; names hold commas; default: all)")
    parser.add_argument("--auc-from", type=int, default=0, metavar="N",
                        help="the frame AUC compares the frames from iteration N on (100: those the toy default "
                             "picks among); the picks are unchanged")
    parser.add_argument("--across", action="store_true",
                        help="the folders hold several candidates per prompt (toy_candidates.py --dump-frames): "
                             "pick across them")
    args = parser.parse_args()
    names = args.picker or list(PICKERS)
    unknown = [name for name in names if name not in PICKERS]
    if unknown:
        parser.error(f"unknown picker {unknown[0]!r}")

    runs = load_runs(args.folders)
    if args.blank_frame_0:
        for run in runs:
            blank_first(run)
    features(runs, toy_caption_bank(64))
    if args.across:
        across_table(runs)
        return
    cells: Dict[tuple, List[int]] = defaultdict(list)
    for run in runs:
        key = (run["method"], run["group"])
        accepted = run["accepted"]
        cells[key + ("ever",)].append(int(accepted.any()))
        for name in names:
            cells[key + (name,)].append(int(accepted[pick(PICKERS[name](run))]))
    ranked = [r["iterations"] >= args.auc_from for r in runs]   # the frames the AUC compares
    mixed = [(r, keep) for r, keep in zip(runs, ranked) if 0 < r["accepted"][keep].sum() < keep.sum()]
    auc = {name: float(np.mean([within_run_auc(PICKERS[name](r)[keep], r["accepted"][keep]) for r, keep in mixed]))
           if mixed else float("nan") for name in names}
    columns = sorted({(r["method"], r["group"]) for r in runs})
    shipped, current = "FramePicker(judge), flatness 20 (clipdraw.picking)", "judge cosine (current)"
    if shipped in names and current in names:
        pairs = [(a, b) for c in columns for a, b in zip(cells[c + (shipped,)], cells[c + (current,)])]
        print(f"{shipped} against {current}, run by run: better in {sum(a > b for a, b in pairs)}, "
              f"worse in {sum(a < b for a, b in pairs)}, of {len(pairs)} runs\n")
    print("| picker | " + " | ".join(f"{m} / {g}" for m, g in columns) + f" | all | frame AUC ({len(mixed)} runs) |")
    print("|" + " --- |" * (len(columns) + 3))
    for name in ["ever"] + names:
        row = [cells[c + (name,)] for c in columns]
        total = sum(sum(x) for x in row), sum(len(x) for x in row)
        print(f"| {name} | " + " | ".join(f"{sum(x)}/{len(x)}" for x in row) + f" | {total[0]}/{total[1]} | "
              f"{auc.get(name, float('nan')):.2f} |")


if __name__ == "__main__":
    main()
