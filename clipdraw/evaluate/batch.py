"""A prompt file drawn at many seeds: ``clipdraw batch``. The run folders of ``compare``
(``<out>/runs/<engine>/<prompt id>/seed-<k>/``, resumable, serial or on Ray), without the
judging; ``batch.csv`` and ``batch.json`` list every run: its image and numbers when
finished, why when it failed, nothing when it is still to do."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .compare import plan
from .datasets import Item, read_prompt_file
from .report import write_csv
from .runs import Execution, RunSpec, execute, experiment_notes, open_experiment, write_json

COLUMNS = ["engine", "item", "group", "prompt", "seed", "status", "final_similarity", "judge_score", "iteration",
           "iterations_done", "seconds", "image", "error"]


def summary_rows(specs: Sequence[RunSpec], items: Sequence[Item], execution: Execution, out: Path) -> List[dict]:
    """One row per run: status finished (with final.png's numbers), failed (with why) or to do."""
    groups = {item.id: item.group for item in items}
    rows = []
    for spec in specs:
        record = execution.records.get(spec.key)
        final = (record or {}).get("final") or {}
        status = "finished" if record is not None else "failed" if spec.key in execution.failed else "to do"
        rows.append({"engine": spec.engine, "item": spec.meta["item"], "group": groups.get(spec.meta["item"], ""),
                     "prompt": spec.prompt, "seed": spec.seed, "status": status,
                     "final_similarity": final.get("similarity"), "judge_score": final.get("judge_score"),
                     "iteration": final.get("iteration"),
                     "iterations_done": (record or {}).get("iterations_done"),
                     "seconds": (record or {}).get("seconds"),
                     "image": str(out / "runs" / spec.key / "final.png") if record is not None else None,
                     "error": execution.failed.get(spec.key)})
    return rows


def run_batch(prompt_file: Path, seeds: int, engine: str, settings, out: Path, device: str = "auto",
              offline: bool = False, limit: Optional[int] = None, keep_frames: bool = False, progress: bool = True,
              log: Callable[[str], None] = print, executor=None) -> Tuple[Dict[str, Path], Execution]:
    """Draw every prompt x seed that is not finished in ``out``, then write batch.csv and
    batch.json. ``settings``: the experiment's ``EngineSettings``; ``executor``: where the runs
    are drawn (``runs.execute``). Returns the written files and the ``runs.Execution``."""
    from ..engines import engine_class  # noqa: PLC0415
    from ..errors import ClipdrawError  # noqa: PLC0415
    from .engines import EngineLoader  # noqa: PLC0415

    if seeds < 1:
        raise ClipdrawError(f"--seeds must be at least 1, got {seeds}")
    items = read_prompt_file(prompt_file, limit)
    settings.check([engine], offline)
    for item in items:   # a prompt the engine cannot draw stops the batch before anything is written
        engine_class(engine).check_prompt(item.prompt)
    open_experiment(out, "batch", {**settings.record(), "engine": engine})
    specs = plan(items, [engine], seeds)
    loader = EngineLoader(settings, device=device, offline=offline, keep_frames=keep_frames)
    execution = execute(specs, out, loader, keep_frames=keep_frames, progress=progress, log=log, gif=keep_frames,
                        executor=executor)
    rows = summary_rows(specs, items, execution, out)
    finished = sum(row["status"] == "finished" for row in rows)
    header = {"prompt_file": str(prompt_file), "prompts": len(items), "seeds": seeds, "engine": engine,
              "frames kept": keep_frames, "settings": settings.used([engine]), "runs": len(rows),
              "finished": finished, "failed": len(execution.failed),
              "notes": experiment_notes(False, "", execution, finished, len(rows))}
    paths = {"csv": write_csv(out / "batch.csv", rows, COLUMNS)}
    write_json(out / "batch.json", {**header, "rows": rows})
    paths["json"] = out / "batch.json"
    return paths, execution
