"""The paradigms side by side: the same prompts through each engine, judged by one CLIP.

Per generated image (and per gold image, as the baseline row "gold"):

- ``cosine_x100`` and ``clip_score`` with its prompt;
- ``r_precision``: is the prompt the best-scored caption among a pool of other prompts (those
  of the same group when the set has groups, so the prefix study compares "a photo of a tree"
  with "a photo of a lake", not with "a tree"); ``caption_rank`` is its place in that pool;
- ``image_rank`` and ``p_image``: the image among every candidate for the prompt (all
  engines' images and the gold one), ranked by CLIP's probability, as users rank dalle-mini's
  outputs;
- ``gold_cosine_x100`` and ``beats_gold`` when the set has gold images;
- colorimetry: colourfulness, HSV means, dominant colours, histogram EMD to the gold image;
- ``seconds_per_image`` of the engine;
- in toy-world runs, the analytic judge (``clipdraw.toy.judge``): ``verdict`` (accepted or
  rejected; empty when it cannot parse the prompt) and ``sees``, what it reads off the image.

And a summary per engine (and per engine and group), with ``judge_success`` in toy-world runs:
the share of images the analytic judge accepts, among the ``judged`` ones.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ClipdrawError
from ..io import load_image
from .color import describe
from .datasets import Item
from .judge import Judge, ToyVerdicts, judged_summary
from .report import Report, write_csv
from .runs import Execution, RunSpec, experiment_notes, write_json
from .scores import clip_score, image_probabilities, r_precision, rank_of, text_probabilities

POOL = 99            # negatives in the R-precision pool (CLIP R-precision's usual 99 + 1)
GRID_ITEMS = 60      # items shown with their images in the report
PALETTE = 3          # dominant colours per image


def plan(items: Sequence[Item], engines: Sequence[str], per_prompt: int) -> List[RunSpec]:
    return [RunSpec(key=f"{engine}/{item.id}/seed-{k}", engine=engine, prompt=item.prompt, seed=k,
                    meta={"item": item.id, "group": item.group})
            for item in items for engine in engines for k in range(per_prompt)]


def pool_for(index: int, items: Sequence[Item], size: int = POOL) -> List[int]:
    """Indices of the captions an image of ``items[index]`` is matched against: its own first,
    then up to ``size`` others with a different text (same group when groups exist), chosen
    reproducibly."""
    own = items[index]
    others = [j for j, item in enumerate(items) if j != index and item.prompt != own.prompt
              and (not own.group or item.group == own.group)]
    if len(others) > size:
        others = sorted(np.random.default_rng(index).choice(others, size, replace=False).tolist())
    return [index, *others]


def analyze(items: Sequence[Item], specs: Sequence[RunSpec], records: Dict[str, dict], out: Path,
            judge: Judge, verdicts: Optional[ToyVerdicts] = None) -> List[dict]:
    """One row per finished generated image and per gold image; with ``verdicts`` (toy-world
    runs), the analytic judge's verdict on each image against its prompt, and what it sees."""
    position = {item.id: n for n, item in enumerate(items)}
    entries = []   # (engine, item index, seed, image path, run record); images are read when needed
    for spec in specs:
        if spec.key in records:
            entries.append((spec.engine, position[spec.meta["item"]], spec.seed,
                            out / "runs" / spec.key / "final.png", records[spec.key]))
    for n, item in enumerate(items):
        if item.gold is not None:
            entries.append(("gold", n, None, item.gold, None))
    if not entries:
        return []
    image_embeds = judge.embed_images(load_image(e[3]) for e in entries)
    text_embeds = judge.embed_texts([item.prompt for item in items])
    cos = image_embeds @ text_embeds.T                     # (images, items)
    scale = judge.logit_scale
    candidates: Dict[int, List[int]] = {}
    for row_index, entry in enumerate(entries):
        candidates.setdefault(entry[1], []).append(row_index)
    gold_cos = {entries[r][1]: cos[r, entries[r][1]] for r in range(len(entries)) if entries[r][0] == "gold"}

    gold_image = functools.lru_cache(maxsize=2)(load_image)   # rows come item by item
    rows = []
    for r, (engine, n, seed, path, record) in enumerate(entries):
        item = items[n]
        pool = pool_for(n, items)
        pool_scores = cos[r, pool]
        group = candidates[n]
        p_images = image_probabilities(cos[group, n][:, None], scale)[:, 0]
        gold = gold_image(item.gold) if item.gold is not None and engine != "gold" else None
        picture = load_image(path)
        colors = describe(picture, gold, k=PALETTE)
        seconds = None
        if record is not None:
            seconds = record.get("seconds_per_image", record.get("seconds"))
        rows.append({
            "engine": engine, "item": item.id, "group": item.group, "prompt": item.prompt, "seed": seed,
            "cosine_x100": 100.0 * cos[r, n], "clip_score": float(clip_score(cos[r, n])),
            "r_precision": r_precision(pool_scores, [0]) if len(pool) > 1 else None,
            "caption_rank": rank_of(pool_scores, 0), "pool": len(pool),
            "p_caption": float(text_probabilities(pool_scores[None], scale)[0, 0]),
            "image_rank": rank_of(cos[group, n], group.index(r)), "candidates": len(group),
            "p_image": float(p_images[group.index(r)]),
            "gold_cosine_x100": 100.0 * gold_cos[n] if n in gold_cos else None,
            "beats_gold": bool(cos[r, n] > gold_cos[n]) if n in gold_cos and engine != "gold" else None,
            "colourfulness": colors["colourfulness"], "hue_mean": colors["hue_mean"],
            "saturation_mean": colors["saturation_mean"], "value_mean": colors["value_mean"],
            "dominant": " ".join(c["hex"] for c in colors["dominant"]),
            "emd_to_gold": colors.get("emd") if engine != "gold" else None,
            "seconds_per_image": seconds, "file": str(path),
            "judge_is_guide": engine == "optimize" and record is not None
                              and judge.same_as((record.get("models") or {}).get("clip"))})
        if verdicts is not None:
            rows[-1]["verdict"], rows[-1]["sees"] = verdicts(item.prompt, picture)
    return rows


def _mean(values) -> Optional[float]:
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return statistics.fmean(present) if present else None


def summarize(rows: List[dict], by_group: bool = False) -> List[dict]:
    """Means per engine (and group): the table users read first; with the analytic judge's
    success rate where the rows carry verdicts (toy-world runs)."""
    keys = list(dict.fromkeys((r["engine"], r["group"] if by_group else "") for r in rows))
    summary = []
    for engine, group in keys:
        chosen = [r for r in rows if r["engine"] == engine and (not by_group or r["group"] == group)]
        cosines = [r["cosine_x100"] for r in chosen]
        summary.append({
            "engine": engine, **({"group": group} if by_group else {}), "images": len(chosen),
            "cosine_x100": _mean(cosines), "cosine_x100_std": statistics.pstdev(cosines) if len(cosines) > 1 else None,
            "clip_score": _mean(r["clip_score"] for r in chosen),
            "r_precision": _mean(r["r_precision"] for r in chosen),
            "caption_rank": _mean(r["caption_rank"] for r in chosen),
            "image_rank": _mean(r["image_rank"] for r in chosen), "p_image": _mean(r["p_image"] for r in chosen),
            "beats_gold": _mean(None if r["beats_gold"] is None else float(r["beats_gold"]) for r in chosen),
            "colourfulness": _mean(r["colourfulness"] for r in chosen),
            "saturation_mean": _mean(r["saturation_mean"] for r in chosen),
            "emd_to_gold": _mean(r["emd_to_gold"] for r in chosen),
            "seconds_per_image": _mean(r["seconds_per_image"] for r in chosen)})
        if any("verdict" in r for r in chosen):
            summary[-1].update(judged_summary(r.get("verdict") for r in chosen))
    return summary


SUMMARY_COLUMNS = ["engine", "group", "images", "judge_success", "judge_success_low", "judge_success_high", "judged",
                   "cosine_x100", "cosine_x100_std", "clip_score", "r_precision", "caption_rank", "image_rank", "p_image",
                   "beats_gold", "colourfulness", "saturation_mean", "emd_to_gold", "seconds_per_image"]
IMAGE_COLUMNS = ["engine", "item", "group", "prompt", "seed", "verdict", "sees", "cosine_x100", "clip_score", "r_precision",
                 "caption_rank", "pool", "p_caption", "image_rank", "candidates", "p_image", "gold_cosine_x100",
                 "beats_gold", "colourfulness", "hue_mean", "saturation_mean", "value_mean", "dominant",
                 "emd_to_gold", "seconds_per_image", "judge_is_guide", "file"]
TOY_IMAGE_COLUMNS = ("verdict", "sees")            # the analytic judge's, in toy-world runs only
TOY_SUMMARY_COLUMNS = ("judge_success", "judge_success_low", "judge_success_high", "judged")
GOLD_SUMMARY_COLUMNS = ("beats_gold", "emd_to_gold")   # the page shows them when the set has gold images


def write_outputs(out: Path, header: dict, rows: List[dict], items: Sequence[Item], notes: List[str]) -> Dict[str, Path]:
    """compare.html, compare_images.csv, compare_summary.csv and compare.json."""
    grouped = any(item.group for item in items)
    summary = summarize(rows)
    group_summary = summarize(rows, by_group=True) if grouped else []
    toy = any("verdict" in r for r in rows)   # the analytic judge's columns: toy-world runs only
    image_columns = [c for c in IMAGE_COLUMNS if toy or c not in TOY_IMAGE_COLUMNS]
    summary_columns = [c for c in SUMMARY_COLUMNS if toy or c not in TOY_SUMMARY_COLUMNS]
    paths = {"images_csv": write_csv(out / "compare_images.csv", rows, image_columns),
             "summary_csv": write_csv(out / "compare_summary.csv", summary + group_summary, summary_columns)}
    write_json(out / "compare.json", {**header, "notes": notes, "summary": summary, "group_summary": group_summary,
                                      "images": rows})
    paths["json"] = out / "compare.json"
    paths["html"] = _html_report(header, rows, summary, group_summary, items, notes).write(out / "compare.html")
    return paths


def _html_report(header: dict, rows: List[dict], summary: List[dict], group_summary: List[dict],
                 items: Sequence[Item], notes: List[str]) -> Report:
    report = Report(f"Paradigm comparison: {header['source']}")
    report.settings_table(header)
    for note in notes:
        report.paragraph(note, note=True)
    toy = any("verdict" in r for r in rows)
    if toy:
        report.paragraph("Analytic judge (toy world): clipdraw.toy.judge reads the shapes off each image, with no "
                         "learned model, and accepts it when it shows exactly what the prompt asks (colours, "
                         "shapes, count, position, relation). judge_success: share of an engine's images it "
                         "accepts, among the judged ones (prompts it can parse), with its 95% interval "
                         "(judge_success_low to judge_success_high, Wilson's: with 6 images, 3 accepted reads 0.19 "
                         "to 0.81, so two engines differ surely only where their intervals part; it takes the images for "
                         "independent trials, which several images of one prompt are not quite, so it reads a little "
                         "narrow then); verdict and sees, "
                         "per image, are in the image table and under each image below.")
    report.heading("Summary per engine")
    gold = any(r["engine"] == "gold" for r in rows)
    report.paragraph("cosine_x100: judging CLIP's similarity with the prompt; r_precision: share of images whose "
                     "prompt scores best among the pool of other prompts; image_rank and p_image: among every "
                     "image drawn for the prompt" + (" (and the gold one), by CLIP's probability; beats_gold: share "
                                                     "scoring above the dataset's own image; emd_to_gold: colour "
                                                     "histogram distance in levels." if gold else
                                                     ", by CLIP's probability."))
    summary_columns = [c for c in SUMMARY_COLUMNS if (toy or c not in TOY_SUMMARY_COLUMNS)
                       and (gold or c not in GOLD_SUMMARY_COLUMNS)]
    report.table(summary, [c for c in summary_columns if c != "group"])
    if group_summary:
        report.heading("Per engine and group")
        report.table(group_summary, summary_columns)
    plt = report.pyplot()
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    if plt is not None and rows:
        report.heading("Plots")
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
        left.boxplot([[r["cosine_x100"] for r in rows if r["engine"] == e] for e in engines])
        left.set_xticks(range(1, len(engines) + 1), engines)
        left.set(title="judging CLIP similarity x100 per image")
        right.boxplot([[r["colourfulness"] for r in rows if r["engine"] == e] for e in engines])
        right.set_xticks(range(1, len(engines) + 1), engines)
        right.set(title="colourfulness (Hasler-Süsstrunk)")
        report.figure(fig)
        if group_summary:
            groups = list(dict.fromkeys(s["group"] for s in group_summary))
            fig, axis = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 3.5))
            width = 0.8 / len(engines)
            for k, engine in enumerate(engines):
                values = [next((s["cosine_x100"] for s in group_summary if s["engine"] == engine
                                and s["group"] == g), np.nan) for g in groups]
                axis.bar(np.arange(len(groups)) + k * width, values, width, label=engine)
            axis.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20)
            axis.set(title="mean similarity x100 per group", ylabel="cosine x100")
            axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))   # beside the bars, not on them
            report.figure(fig)
        if any(r["gold_cosine_x100"] is not None for r in rows):
            fig, axis = plt.subplots(figsize=(5, 4.5))
            for engine in (e for e in engines if e != "gold"):
                chosen = [r for r in rows if r["engine"] == engine and r["gold_cosine_x100"] is not None]
                axis.scatter([r["gold_cosine_x100"] for r in chosen], [r["cosine_x100"] for r in chosen],
                             s=12, label=engine)
            low = min(min(r["cosine_x100"] for r in rows), min(r["gold_cosine_x100"] or 100 for r in rows))
            high = max(max(r["cosine_x100"] for r in rows), max(r["gold_cosine_x100"] or 0 for r in rows))
            axis.plot([low, high], [low, high], color="grey", linestyle=":")
            axis.set(title="generated vs gold image", xlabel="gold cosine x100", ylabel="generated cosine x100")
            axis.legend(fontsize=8)
            report.figure(fig)
    report.heading("Images")
    shown = items[:GRID_ITEMS]
    if len(items) > len(shown):
        report.paragraph(f"The first {len(shown)} of {len(items)} prompts; every image is in compare_images.csv.")
    for item in shown:
        entries = []
        for row in (r for r in rows if r["item"] == item.id):
            who = "gold" if row["engine"] == "gold" else f"{row['engine']} s{row['seed']}"
            caption = f"{who} · {row['cosine_x100']:.1f} · rank {row['image_rank']}/{row['candidates']}"
            if "verdict" in row:
                mark = {"accepted": "judge ✓", "rejected": "judge ✗"}.get(row["verdict"], "judge: no verdict")
                caption += f" · {mark} · sees {row['sees']}"
            entries.append((load_image(row["file"]), caption))
        if entries:
            label = f"[{item.group}] {item.prompt}" if item.group else item.prompt
            report.images(entries, label=label)
    return report


def run_compare(items: List[Item], source: str, engines: Sequence[str], per_prompt: int, settings, out: Path,
                eval_model: str, device: str = "auto", offline: bool = False, progress: bool = True,
                log=print, keep_frames: bool = False, executor=None) -> Tuple[Dict[str, Path], Execution]:
    """The whole comparison: generate what is missing, judge every image, write the report.
    ``keep_frames``: each run folder keeps its frames and progress.gif, as ``clipdraw generate``
    writes them (runs finished before without them are not redone). ``executor``: where the
    runs are drawn (``runs.execute``). Returns the written files and the ``runs.Execution``."""
    from ..device import resolve_device  # noqa: PLC0415
    from .engines import EngineLoader  # noqa: PLC0415
    from .judge import check_eval_model  # noqa: PLC0415
    from .runs import execute, open_experiment  # noqa: PLC0415

    if per_prompt < 1:
        raise ClipdrawError(f"--per-prompt must be at least 1, got {per_prompt}")
    if not engines:
        raise ClipdrawError("--engines names no engine: expected e.g. optimize,dallemini")
    settings.check(engines, offline)
    check_eval_model(eval_model, offline)
    open_experiment(out, "compare", settings.record())
    specs = plan(items, engines, per_prompt)
    loader = EngineLoader(settings, device=device, offline=offline, keep_frames=keep_frames)
    execution = execute(specs, out, loader, keep_frames=keep_frames, progress=progress, log=log, gif=keep_frames,
                        executor=executor)
    records = execution.records
    del loader
    if not records and not any(item.gold for item in items):
        return {}, execution
    judge = Judge.load(eval_model, resolve_device(device), offline=offline)
    rows = analyze(items, specs, records, out, judge, ToyVerdicts() if settings.model == "toy" else None)
    notes = experiment_notes(any(r["judge_is_guide"] for r in rows), judge.name, execution, len(records), len(specs))
    header = {"source": source, "prompts": len(items), "engines": list(engines), "per_prompt": per_prompt,
              "frames kept": keep_frames,
              **({"guiding CLIP (optimize)": settings.guide_name} if "optimize" in engines else {}),
              "judging CLIP": judge.description, "judge": judge.info,
              **({"analytic judge": "clipdraw.toy.judge (verdict per image, judge_success per engine)"}
                 if settings.model == "toy" else {}),
              "settings": settings.used(engines)}
    return write_outputs(out, header, rows, items, notes), execution
