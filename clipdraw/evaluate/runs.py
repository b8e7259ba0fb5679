"""Resumable batches of generations: each run is a clipdraw run folder under ``<out>/runs/``
(final.png and run.json; its frames and progress.gif too where the experiment keeps them:
``execute``), and it counts as finished once its run.json is on disk (written last, by an
atomic rename, and not marked interrupted).

So re-running an experiment skips what is finished; Ctrl-C, a crash, a full disk or a lack of
memory costs at most the run in progress, whose partial folder is removed (and, were it left,
would not count: ``finished_record``) and redone next time. The folder's
``experiment.json`` holds the generation settings: an experiment is only resumed with the
same ones, since mixing images made with different settings would make the comparison wrong.

``execute`` hands the unfinished runs to an executor: ``SerialExecutor`` draws them one after
another here; ``ray_exec.RayExecutor`` on Ray workers, whose results (``draw``) come back to be
written here (``write_run``) by the same ``RunWriter`` calls, so both leave the same folders.

Run folders are named from user data (prompts, dataset ids), so ``run_folder`` is the one
gate to them: every folder this module reads, creates or deletes lies strictly inside ``out``,
even through symbolic links, and a left-over symbolic link is removed, never followed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, List, Optional

from ..errors import ClipdrawError
from ..io import atomic_write_json
from ..outputs import RunWriter, check_output_root
from ..progress import progress_bar
from .engines import EngineLoader


@dataclass
class RunSpec:
    """One generation of an experiment."""

    key: str            # folder under <out>/runs/, e.g. "optimize/a-photo-of-x/seed-0"
    engine: str
    prompt: str
    seed: int
    meta: Dict[str, object] = field(default_factory=dict)   # entity, template, item id ...


def run_folder(out: Path, key: str) -> Path:
    """``<out>/runs/<key>``, or a ClipdrawError when that is not a folder strictly inside ``out``:
    a key with an empty, ``.`` or ``..`` part, an absolute one, or one that a symbolic link
    leads out of ``out`` (checked on the resolved path)."""
    parts = key.split("/")
    if not key or PurePath(key).anchor or any(part in ("", ".", "..") for part in parts) \
            or "\\" in key or "\0" in key:
        raise ClipdrawError(f"run folder name {key!r} is not a plain relative path: refusing to create or "
                            f"delete anything under {out}")
    path = out / "runs" / key
    try:
        root, target = out.resolve(), path.resolve()
    except (OSError, RuntimeError) as e:   # RuntimeError: a symbolic link loop (Python < 3.13)
        raise ClipdrawError(f"cannot resolve run folder {path}: {e}") from None
    if target == root or root not in target.parents:
        raise ClipdrawError(f"run folder {path} leads to {target}, outside {out} (through a symbolic link?): "
                            "refusing to create or delete it")
    return path


def remove_run_folder(run_dir: Path) -> None:
    """Delete a left-over run folder (checked by ``run_folder``); a symbolic link in its place
    is unlinked, not followed, and ``shutil.rmtree`` never follows the links inside."""
    if run_dir.is_symlink() or run_dir.is_file():
        run_dir.unlink()
    elif run_dir.exists():
        shutil.rmtree(run_dir)


def _discard(run_dir: Path, out: Path) -> None:
    """``remove_run_folder`` after a failure, then the folders above it that this left empty, up to
    ``out`` (``runs/``, ``runs/<engine>/`` ...): best effort, the first error is the one to report."""
    try:
        remove_run_folder(run_dir)
        for parent in run_dir.parents:
            if parent == out or out not in parent.parents:
                break
            parent.rmdir()   # OSError when not empty: the rest is someone's
    except OSError:
        pass


def write_json(path: Path, data) -> None:
    atomic_write_json(path, data, indent=2, default=str, allow_nan=True)


def open_experiment(out: Path, kind: str, settings: dict) -> None:
    """Create ``out`` or check it holds an experiment of this kind with these settings."""
    check_output_root(out)
    record_path = out / "experiment.json"
    if record_path.is_file():
        try:
            existing = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ClipdrawError(f"cannot read {record_path}: {e}; move it away or choose another --out") from None
        if existing.get("kind") != kind:
            raise ClipdrawError(f"{out} holds a {existing.get('kind')!r} experiment, not a {kind!r} one: "
                                "choose another --out")
        old = existing.get("settings", {})
        changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if changed:
            key = changed[0]
            raise ClipdrawError(f"{out} holds runs made with {key} = {old.get(key)!r}, not {settings.get(key)!r}: "
                                "resume with the same settings or choose another --out")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipdrawError(f"cannot create {out}: {e.strerror or e}") from None
    write_json(record_path, {"kind": kind, "settings": settings})


def finished_record(run_dir: Path, spec: RunSpec) -> Optional[dict]:
    """The run.json of a finished run of ``spec`` in ``run_dir``, else None (and the run is redone).

    Not finished: a run.json that cannot be read or parsed or is not an object; one that records
    an interruption or an error, or another prompt or seed; a final image or a listed frame that
    is missing or not a whole image file."""
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("interrupted") or record.get("error") is not None \
            or record.get("status", "finished") != "finished":
        return None
    if record.get("prompt") != spec.prompt or record.get("seed") != spec.seed:
        return None
    final, frames = record.get("final"), record.get("frames", [])
    if not isinstance(final, dict) or not {"iteration", "similarity"} <= set(final) or not isinstance(frames, list) \
            or not all(isinstance(f, dict) and "iteration" in f for f in frames):
        return None
    files = ["final.png", *(f.get("file") for f in frames)]
    if not all(isinstance(name, str) and _is_whole_image(run_dir, name) for name in files):
        return None
    return record


def _is_whole_image(run_dir: Path, name: str) -> bool:
    """Whether ``run_dir/name`` is a plain file name there holding a complete, undamaged image."""
    from PIL import Image  # noqa: PLC0415

    if not name or name != PurePath(name).name or name in (".", ".."):
        return False
    try:
        with Image.open(run_dir / name) as image:
            image.verify()   # reads every chunk and checks its CRC; decodes nothing
    except Exception:  # noqa: BLE001  (missing, truncated, not an image: all mean "not finished")
        return False
    return True


@dataclass
class Execution:
    """What ``execute`` made of a batch: the run.json record of every finished run (by key),
    whether Ctrl-C cut it short, and the runs that failed every attempt (key -> why)."""

    records: Dict[str, dict] = field(default_factory=dict)
    interrupted: bool = False
    failed: Dict[str, str] = field(default_factory=dict)


@dataclass
class Batch:
    """The pending runs of an experiment and where each goes: what an executor works through.

    Executors draw (``draw``) wherever they like; the run folders are written here, in this
    process, by ``write_run`` or, streaming, the serial loop, so every executor leaves the same
    folders in ``out``."""

    pending: List[RunSpec]
    out: Path
    folders: Dict[str, Path]
    loader: EngineLoader
    keep_frames: bool
    gif: bool
    bar: Any
    execution: Execution

    def finished(self, spec: RunSpec) -> None:
        """Count ``spec`` as finished: its run.json is on disk."""
        self.execution.records[spec.key] = json.loads((self.folders[spec.key] / "run.json").read_text(encoding="utf-8"))
        self.bar.update(1)

    def discard(self, spec: RunSpec) -> None:
        """Remove what a run that did not finish left (and the folders it emptied)."""
        _discard(self.folders[spec.key], self.out)


def label(spec: RunSpec) -> str:
    return f"{spec.engine}: {spec.prompt[:40]} (seed {spec.seed})"


class SerialExecutor:
    """Runs one after another in this process, each written frame by frame as it is drawn; a
    run that fails stops the batch (after its partial folder is removed)."""

    def run(self, batch: Batch) -> None:
        bar = batch.bar
        for spec in batch.pending:
            run_dir = batch.folders[spec.key]
            bar.set_postfix_str(label(spec))
            try:
                engine = batch.loader.get(spec.engine)   # before the folder exists: a failed load leaves none
                remove_run_folder(run_dir)   # left over by an interrupted run: redo it
                run_dir.mkdir(parents=True)
                writer = RunWriter(run_dir, spec.prompt, asdict(engine.settings_at(spec.seed)), engine.describe(),
                                   gif=batch.gif and batch.keep_frames, engine=spec.engine)

                def on_frame(frame, writer=writer, name=label(spec)):   # one bar for the batch, not one per run
                    if batch.keep_frames:
                        writer.add_frame(frame)
                    bar.set_postfix_str(f"{name} it {frame.iteration}, similarity {frame.similarity:.3f}")

                result = engine.generate(spec.prompt, spec.seed, on_frame, progress=False)
                if result.interrupted:
                    raise KeyboardInterrupt
                writer.finish(result, extra={"experiment": spec.meta})
            except KeyboardInterrupt:
                batch.discard(spec)
                batch.execution.interrupted = True
                return
            except BaseException:
                batch.discard(spec)
                raise
            batch.finished(spec)


@dataclass
class RunOutcome:
    """One run drawn away from the folder it goes to (on a Ray worker): what ``write_run``
    needs to write the folder a serial run writes. ``frames`` are every frame with its image
    when the experiment keeps frames, else empty."""

    settings: dict
    info: dict
    frames: List[Any]
    result: Any


def draw(engine, spec: RunSpec, keep_frames: bool) -> RunOutcome:
    """Draw ``spec`` with ``engine``, keeping what ``write_run`` needs. Tensors the result holds
    (the optimizer's latents, the transformer's tokens) are dropped: run.json does not read
    them, and a CUDA tensor could not be unpickled on a driver without CUDA."""
    import torch  # noqa: PLC0415

    frames: List[Any] = []
    result = engine.generate(spec.prompt, spec.seed, frames.append if keep_frames else None, progress=False)
    if result.interrupted:
        raise KeyboardInterrupt
    tensors = {f.name: None for f in fields(result) if isinstance(getattr(result, f.name), torch.Tensor)}
    return RunOutcome(asdict(engine.settings_at(spec.seed)), engine.describe(), frames, replace(result, **tensors))


def write_run(batch: Batch, spec: RunSpec, outcome: RunOutcome) -> None:
    """Write the run folder of a run drawn elsewhere, as the serial loop writes it (the same
    ``RunWriter`` calls in the same order), then count it finished. A failure or Ctrl-C while
    writing removes the partial folder and goes on up."""
    run_dir = batch.folders[spec.key]
    try:
        remove_run_folder(run_dir)
        run_dir.mkdir(parents=True)
        writer = RunWriter(run_dir, spec.prompt, outcome.settings, outcome.info,
                           gif=batch.gif and batch.keep_frames, engine=spec.engine)
        for frame in outcome.frames:
            writer.add_frame(frame)
        writer.finish(outcome.result, extra={"experiment": spec.meta})
    except BaseException:
        batch.discard(spec)
        raise
    batch.finished(spec)


def execute(specs: List[RunSpec], out: Path, loader: EngineLoader, keep_frames: bool, progress: bool = True,
            log: Callable[[str], None] = print, gif: bool = False, executor=None) -> Execution:
    """Run every unfinished spec with ``executor`` (default: ``SerialExecutor``; on Ray:
    ``clipdraw.evaluate.ray_exec.RayExecutor``). Finished runs are never redone.

    ``keep_frames`` writes each frame beside final.png and ``gif`` their progress.gif, as
    ``clipdraw generate`` does. An interruption is only returned, not reported: the command says
    it once, after the report. Every run folder is checked by ``run_folder`` before anything is
    read, created or deleted; one that does not finish is removed with the folders it emptied."""
    folders = {spec.key: run_folder(out, spec.key) for spec in specs}
    execution = Execution()
    pending = []
    for spec in specs:
        record = finished_record(folders[spec.key], spec)
        if record is not None:
            execution.records[spec.key] = record
        else:
            pending.append(spec)
    if execution.records:
        log(f"{len(execution.records)} of {len(specs)} run(s) already finished in {out}: skipped")
    if not pending:
        return execution
    bar = progress_bar(total=len(pending), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        (executor or SerialExecutor()).run(Batch(pending, out, folders, loader, keep_frames, gif, bar, execution))
    finally:
        bar.close()
    return execution


def experiment_notes(judge_is_guide: bool, judge_name: str, execution: Execution, finished: int,
                     planned: int) -> List[str]:
    """The notes above an experiment's report: a judge that guided, failed runs, unfinished runs."""
    notes = []
    if judge_is_guide:
        notes.append(f"The judging CLIP ({judge_name}) is the one that guided the optimizer: its scores of the "
                     "optimizer's images are not independent (pass --eval-model to judge with another CLIP).")
    notes.extend(failure_notes(execution))
    if finished < planned:
        notes.append(f"Only {finished} of {planned} runs are finished; run the same command again to go on.")
    return notes


def failure_notes(execution: Execution, shown: int = 5) -> List[str]:
    """The report's note on runs that failed every attempt: how many, and the first few with why."""
    if not execution.failed:
        return []
    listed = "; ".join(f"{key}: {why}" for key, why in list(execution.failed.items())[:shown])
    more = f"; and {len(execution.failed) - shown} more" if len(execution.failed) > shown else ""
    return [f"{len(execution.failed)} run(s) failed on every attempt and are left out ({listed}{more}); run the same "
            "command again to retry them."]
