#!/usr/bin/env python3
"""Best of K: does optimizing K latents side by side and keeping the judge's pick help?

``--candidates K`` (``GenerationConfig.candidates``) optimizes K latents per image and keeps the
candidate whose best frame the judge ranks highest. This benchmark runs the K candidates of each
prompt as one batch (seeds 10 i, 10 i + 1, ..., plus ``--seed-offset``: the same loop, every
candidate's frames kept)
and reports, per prompt group of ``toy_success.py``, how often the analytic judge accepts:

* the pick across all candidates (what ``--candidates K`` returns);
* the first candidate's pick alone (what one run at these settings returns);
* any candidate's own pick (the ceiling of a perfect choice among the K picks);
* any saved frame of any candidate (the ceiling of a perfect picker).

    python benchmarks/toy_candidates.py --prompts 20 --candidates 4 --set cutn=4 --set overview=1

``--dump-frames DIR`` keeps every candidate's frames and verdicts, for pickers across the
candidates tried offline (``toy_picking.py DIR --across``).

Measured in docs/toy-guidance.md ("Several candidates, one pick").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy_success  # noqa: E402  (its prompts, and its workers: one thread each, the toy models loaded once)


def run_prompt(task) -> dict:
    """One prompt's K candidates -> the analytic judge's verdicts on each one's picks and frames."""
    from clipdraw.config import toy_config  # noqa: PLC0415
    from clipdraw.optimize import best_candidate, candidate_score, generate_batch  # noqa: PLC0415
    from clipdraw.toy.judge import satisfies  # noqa: PLC0415

    group, index, caption, candidates, offset, overrides = task
    overrides = dict(overrides)
    dump = overrides.pop("dump_frames", None)
    config = toy_config(**{**overrides, "seed": 10 * index + offset, "batch": candidates, "candidates": 1})
    start = time.perf_counter()
    results = generate_batch(toy_success._MODELS, caption, config, progress=False, keep_images=True)
    seconds = time.perf_counter() - start
    picks = [bool(satisfies(caption, r.chosen_frame.image)) for r in results]
    chosen = best_candidate([candidate_score(r.frames, config.first_pick) for r in results])
    verdicts = [[bool(satisfies(caption, f.image)) for f in r.frames] for r in results]
    if dump:   # every candidate's frames, for pickers tried offline (toy_picking.py --across)
        for j, (r, accepted) in enumerate(zip(results, verdicts)):
            toy_success.dump_frames(dump, {"method": f"candidate{j}", "group": group, "index": index,
                                           "caption": caption}, r.frames, accepted)
    return {"group": group, "index": index, "caption": caption, "seconds": seconds, "picks": picks,
            "across": picks[chosen], "chosen": chosen, "ever": any(map(any, verdicts))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20, help="prompts per group")
    parser.add_argument("--seed", type=int, default=999, help="prompt seed (the models trained on seeds 0-13)")
    parser.add_argument("--groups", default="single", help="kinds of prompt to run")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="prompt i's candidates have seeds 10 i + offset, ...: another sample of the same runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a toy default (e.g. --set cutn=8)")
    parser.add_argument("--json", help="write every prompt's result here")
    parser.add_argument("--dump-frames", metavar="DIR",
                        help="write every candidate's frames and verdicts here (benchmarks/toy_picking.py --across)")
    args = parser.parse_args()

    overrides = {name: toy_success._value(value) for name, value in (item.split("=", 1) for item in args.set)}
    if args.dump_frames:
        os.makedirs(args.dump_frames, exist_ok=True)
        overrides["dump_frames"] = args.dump_frames
    groups = {g: v for g, v in toy_success.prompt_sets(args.prompts, args.seed).items() if g.split(",")[0] in args.groups}
    tasks = [(g, i, caption, args.candidates, args.seed_offset, overrides) for g, prompts in groups.items()
             for i, (caption, _) in enumerate(prompts)]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=toy_success._worker_init) as pool:
        results = list(pool.map(run_prompt, tasks))
    wall = time.perf_counter() - started

    rows = (("pick across the candidates", lambda r: r["across"]), ("first candidate alone", lambda r: r["picks"][0]),
            ("some candidate's pick accepted", lambda r: any(r["picks"])), ("some frame accepted", lambda r: r["ever"]))
    settings = {k: v for k, v in overrides.items() if k != "dump_frames"}
    print(f"{args.candidates} candidates, toy defaults" + (f" with {settings}" if settings else ""))
    print("| | " + " | ".join(groups) + " |")
    print("|" + " --- |" * (len(groups) + 1))
    for name, hit in rows:
        cells = []
        for group in groups:
            mine = [r for r in results if r["group"] == group]
            cells.append(f"{sum(map(hit, mine))} / {len(mine)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{statistics.median(r['seconds'] for r in results):.1f} s per prompt (median, one thread, all "
          f"{args.candidates} candidates); {wall:.0f} s in all on {args.workers} worker(s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
