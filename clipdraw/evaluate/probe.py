"""Named-entity probes: does the generator know this person or brand?

For every entity x template x seed, one generation with frames every ``save_every``
iterations. Then, frame by frame, the judging CLIP gives

- the similarity curve: cosine x 100 between the frame and the run's own prompt;
- zero-shot identification: the probabilities over every entity of the list, written with
  the same template ("a photo of Albert Einstein", "a photo of Steve Jobs", ...); the frame
  is identified when its own entity comes first;

and, in lists of people (``# kind: people``, or ``--faces``), OpenCV's face cascade counts
faces, to find the iteration where a face appears and where a second one creeps in; without
counts, the reports have no face columns. The summary per entity x template: identified or
not (share of seeds, on the result, final.png), first iteration identified, iteration of the
second face, final similarity.

In toy-world runs the analytic judge (``clipdraw.toy.judge``) also reads every frame: its
``verdict`` on the run's prompt, or, where it cannot parse the prompt ("a photo of red
circle"), on the entity with an article ("a red circle"); ``verdict_caption`` says which. A
frame then counts as identified only when the judging CLIP picks its entity *and* the analytic
judge accepts it (``clip_identified`` keeps the CLIP's pick alone): a CLIP's zero-shot pick
among four names says little about a faint lavender square drawn for "red circle". Where the
judge can read neither, identification stays the CLIP's.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ClipdrawError
from ..io import load_image, read_text
from ..outputs import slugify, unique_names
from .datasets import read_lines
from .faces import FaceCounter, first_iteration
from .judge import Judge, ToyVerdicts, judged_summary
from .report import PROBABILITY_LIMITS, Report, write_csv
from .runs import Execution, RunSpec, experiment_notes
from .scores import cosine_matrix, text_probabilities

DEFAULT_TEMPLATES = ("a photo of {}", "a photo of the face of {}", "{}")
KIND_LINE = re.compile(r"#\s*kind\s*:\s*([\w-]+)", re.IGNORECASE)   # a list's declaration: "# kind: people"
STRIP_FRAMES = 8   # frames shown per run in the report


def read_entities(path: Path) -> List[str]:
    """Entities, one per line (``#`` comments and ``[group]`` headers allowed), without repeats."""
    entities = list(dict.fromkeys(text for _, text in read_lines(path, "entity list")))
    if not entities:
        raise ClipdrawError(f"entity list {path} names no entity: write one name per line, e.g. Albert Einstein")
    if len(entities) < 2:
        raise ClipdrawError(f"entity list {path} names only {entities[0]!r}: identification picks among the "
                            "list's entities, so give at least two")
    return entities


def read_templates(values: Sequence[str]) -> List[str]:
    """Each value is a template with ``{}`` where the entity goes, or a file of them."""
    templates: List[str] = []
    for value in values or DEFAULT_TEMPLATES:
        if "{}" not in value and Path(value).expanduser().is_file():
            templates.extend(text for _, text in read_lines(Path(value).expanduser(), "template file"))
        else:
            templates.append(value)
    for template in templates:
        if template.count("{}") != 1:
            raise ClipdrawError(f"template {template!r} needs exactly one {{}} where the entity goes, "
                                "e.g. 'a photo of {}'")
    if not templates:
        raise ClipdrawError("no template given")
    return list(dict.fromkeys(templates))


def fill(template: str, entity: str) -> str:
    return template.replace("{}", entity)


def plan(entities: Sequence[str], templates: Sequence[str], seeds: int, engine: str) -> List[RunSpec]:
    pairs = [(e, t) for e in entities for t in templates]
    # one folder per entity x template, even when two prompts share a slug ("Einstein!" and "einstein")
    names = unique_names(slugify(fill(t, e), 80) for e, t in pairs)
    return [RunSpec(key=f"{engine}/{name}/seed-{s}", engine=engine, prompt=fill(t, e), seed=s,
                    meta={"entity": e, "template": t})
            for (e, t), name in zip(pairs, names) for s in range(seeds)]


def verdict_caption(prompt: str, entity: str, verdicts: ToyVerdicts) -> Optional[str]:
    """What the analytic judge checks a probe's frames against: the prompt when it can parse it,
    else the entity as a caption ("a red circle", then "red circle"), else None (no verdict)."""
    article = "an" if entity[:1].lower() in "aeiou" else "a"
    return next((c for c in (prompt, f"{article} {entity}", entity) if verdicts.parses(c)), None)


def analyze_run(spec: RunSpec, record: dict, run_dir: Path, entities: Sequence[str], judge: Judge,
                counter: Optional[FaceCounter], text_embeds: Dict[str, np.ndarray],
                verdicts: Optional[ToyVerdicts] = None) -> Tuple[dict, List[dict]]:
    """One run's row and its per-frame rows; with ``verdicts`` (toy-world runs), the analytic
    judge's verdict on every frame and on the result, which identification then requires."""
    entity, template = spec.meta["entity"], spec.meta["template"]
    frames = record.get("frames") or [{"iteration": record["final"]["iteration"], "file": "final.png",
                                        "similarity": record["final"]["similarity"]}]
    images = [load_image(run_dir / f["file"]) for f in frames]
    if template not in text_embeds:
        text_embeds[template] = judge.embed_texts([fill(template, e) for e in entities])
    cos = cosine_matrix(judge.embed_images(images), text_embeds[template])       # (frames, entities)
    probabilities = text_probabilities(cos, judge.logit_scale)
    own = list(entities).index(entity)
    caption = verdict_caption(spec.prompt, entity, verdicts) if verdicts is not None else None
    frame_rows = []
    for n, (frame, image) in enumerate(zip(frames, images)):
        top = int(np.argmax(probabilities[n]))
        frame_rows.append({
            "entity": entity, "template": template, "seed": spec.seed, "iteration": frame["iteration"],
            "file": str(run_dir / frame["file"]), "guide_similarity": frame.get("similarity"),
            "judge_similarity_x100": 100.0 * cos[n, own], "p_entity": float(probabilities[n, own]),
            "top_entity": entities[top], "clip_identified": top == own, "identified": top == own,
            "faces": counter.count(image) if counter else None})
        if verdicts is not None:
            frame_rows[-1]["verdict"], frame_rows[-1]["sees"] = verdicts(caption, image)
            frame_rows[-1]["identified"] = counts_as_identified(top == own, frame_rows[-1]["verdict"])
    iterations = [r["iteration"] for r in frame_rows]
    faces = [r["faces"] for r in frame_rows]
    # the result is final.png: the last frame, or the judge CLIP's pick among the frames (run.json says which)
    result_iteration = (record.get("final") or {}).get("iteration")
    final = next((r for r in frame_rows if r["iteration"] == result_iteration), frame_rows[-1])
    clip_identified, is_identified = final["clip_identified"], final["identified"]
    toy = {}
    if verdicts is not None:   # on final.png itself: the image users see
        verdict, sees = verdicts(caption, load_image(run_dir / "final.png"))
        is_identified = counts_as_identified(clip_identified, verdict)
        toy = {"verdict": verdict, "sees": sees, "verdict_caption": caption}
    row = {"entity": entity, "template": template, "prompt": spec.prompt, "seed": spec.seed,
           "engine": spec.engine, "iterations": record.get("iterations_done"), "result_iteration": final["iteration"],
           **toy, "clip_identified": clip_identified,
           "identified": is_identified, "top_entity": final["top_entity"], "p_entity": final["p_entity"],
           "first_identified": first_iteration(iterations, [int(r["identified"]) for r in frame_rows], 1),
           "first_face": first_iteration(iterations, faces, 1) if counter else None,
           "second_face": first_iteration(iterations, faces, 2) if counter else None,
           "max_faces": max(faces) if counter else None,
           "final_judge_similarity_x100": final["judge_similarity_x100"],
           "final_guide_similarity": record.get("final", {}).get("similarity"),
           "seconds": record.get("seconds"),
           "judge_is_guide": spec.engine == "optimize" and judge.same_as((record.get("models") or {}).get("clip")),
           "run_dir": str(run_dir)}
    return row, frame_rows


def counts_as_identified(clip_identified: bool, verdict: Optional[str]) -> bool:
    """The judging CLIP's pick, and the analytic judge's acceptance where it gave a verdict."""
    return bool(clip_identified) and verdict in (None, ToyVerdicts.ACCEPTED)


def _median(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(run_rows: List[dict], entities: Sequence[str], templates: Sequence[str]) -> List[dict]:
    """One row per entity x template over its seeds."""
    summary = []
    for entity in entities:
        for template in templates:
            rows = [r for r in run_rows if r["entity"] == entity and r["template"] == template]
            if not rows:
                continue
            identified = [r for r in rows if r["first_identified"] is not None]
            with_second = [r for r in rows if r["second_face"] is not None]
            summary.append({
                "entity": entity, "template": template, "runs": len(rows),
                "identified": sum(r["identified"] for r in rows) / len(rows),
                "clip_identified": sum(r["clip_identified"] for r in rows) / len(rows),
                "ever_identified": len(identified) / len(rows),
                "first_identified": _median([r["first_identified"] for r in rows]),
                "second_face_runs": len(with_second) if rows[0]["max_faces"] is not None else None,
                "second_face": _median([r["second_face"] for r in rows]),
                "final_judge_similarity_x100": statistics.fmean(r["final_judge_similarity_x100"] for r in rows),
                "final_p_entity": statistics.fmean(r["p_entity"] for r in rows)})
            if any("verdict" in r for r in rows):
                summary[-1].update(judged_summary(r.get("verdict") for r in rows))
                summary[-1]["verdict_caption"] = rows[0].get("verdict_caption")
    return summary


SUMMARY_COLUMNS = ["entity", "template", "runs", "identified", "clip_identified", "judge_success", "judge_success_low",
                   "judge_success_high", "judged", "verdict_caption", "ever_identified", "first_identified",
                   "second_face_runs", "second_face", "final_judge_similarity_x100", "final_p_entity"]
RUN_COLUMNS = ["entity", "template", "prompt", "seed", "engine", "iterations", "result_iteration", "verdict", "sees",
               "verdict_caption", "identified", "clip_identified", "top_entity", "p_entity", "first_identified",
               "first_face", "second_face", "max_faces", "final_judge_similarity_x100", "final_guide_similarity",
               "seconds", "judge_is_guide", "run_dir"]
FRAME_COLUMNS = ["entity", "template", "seed", "iteration", "guide_similarity", "judge_similarity_x100", "p_entity",
                 "top_entity", "verdict", "sees", "identified", "clip_identified", "faces", "file"]
TOY_COLUMNS = ("judge_success", "judge_success_low", "judge_success_high", "judged",   # toy-world runs only
               "verdict_caption", "verdict", "sees")
FACE_COLUMNS = ("first_face", "second_face", "max_faces", "second_face_runs", "faces")   # when faces are counted


def _columns(columns: Sequence[str], toy: bool, faces: bool) -> List[str]:
    return [c for c in columns if (toy or c not in TOY_COLUMNS) and (faces or c not in FACE_COLUMNS)]


def _kinds(run_rows: List[dict]) -> Tuple[bool, bool]:
    """Whether the rows carry the analytic judge's verdicts (toy world), and face counts."""
    return any("verdict" in r for r in run_rows), any(r.get("max_faces") is not None for r in run_rows)


def write_outputs(out: Path, header: Dict[str, object], summary: List[dict], run_rows: List[dict],
                  frame_rows: List[dict], notes: List[str]) -> Dict[str, Path]:
    """probe.html, probe_summary.csv, probe_runs.csv, probe_frames.csv and probe.json."""
    from .runs import write_json  # noqa: PLC0415

    toy, faces = _kinds(run_rows)
    paths = {"summary_csv": write_csv(out / "probe_summary.csv", summary, _columns(SUMMARY_COLUMNS, toy, faces)),
             "runs_csv": write_csv(out / "probe_runs.csv", run_rows, _columns(RUN_COLUMNS, toy, faces)),
             "frames_csv": write_csv(out / "probe_frames.csv", frame_rows, _columns(FRAME_COLUMNS, toy, faces))}
    write_json(out / "probe.json", {**header, "notes": notes, "summary": summary, "runs": run_rows,
                                    "frames": frame_rows})
    paths["json"] = out / "probe.json"
    paths["html"] = _html_report(header, summary, run_rows, frame_rows, notes).write(out / "probe.html")
    return paths


def _html_report(header: Dict[str, object], summary: List[dict], run_rows: List[dict], frame_rows: List[dict],
                 notes: List[str]) -> Report:
    report = Report(f"Named-entity probe: {header['entities_file']}")
    report.settings_table(header)
    for note in notes:
        report.paragraph(note, note=True)
    toy, counted = _kinds(run_rows)
    report.heading("Summary per entity and template")
    report.paragraph("identified: share of seeds whose result (final.png: the last frame, or the frame the "
                     "generator's judge CLIP picked) the judging CLIP attributes to the entity among the list (same "
                     "template); ever_identified: share identified at some frame; first_identified: median first "
                     "such iteration" + ("; second_face: median iteration where the face detector first counts two "
                                         "faces, over the second_face_runs runs where it happens." if counted else "."))
    if toy:
        report.paragraph("Toy world: the analytic judge (clipdraw.toy.judge, no learned model) reads the shapes off "
                         "every frame and accepts it when it shows exactly verdict_caption (the prompt, or the entity "
                         "as a caption when it cannot parse the prompt). Here a frame counts as identified only "
                         "when the judging CLIP picks its entity AND the analytic judge accepts it; clip_identified "
                         "is the CLIP's pick alone; judge_success: share of seeds whose result the analytic judge "
                         "accepts, among the judged ones, with its 95% interval (judge_success_low to "
                         "judge_success_high, Wilson's). Where it can parse neither, identified is the CLIP's pick.")
    report.table(summary, _columns(SUMMARY_COLUMNS, toy, counted))
    plt = report.pyplot()
    if plt is not None:
        report.heading("Curves")
        for entity in dict.fromkeys(r["entity"] for r in run_rows):
            report.figure(curves_figure(plt, entity, run_rows, frame_rows))
    report.heading("Frames")
    for run in run_rows:
        frames = [f for f in frame_rows if f["entity"] == run["entity"] and f["template"] == run["template"]
                  and f["seed"] == run["seed"]]
        picks = sorted(set(np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int)))
        entries = []
        for f in (frames[i] for i in picks):
            faces = "" if f["faces"] is None else f" · {f['faces']} face{'s' if f['faces'] != 1 else ''}"
            mark = "CLIP ✓" if f["clip_identified"] else f"→ {f['top_entity']}"   # the judge's say apart
            if f.get("verdict"):
                mark += " · judge " + ("✓" if f["verdict"] == ToyVerdicts.ACCEPTED else f"✗ sees {f['sees']}")
            entries.append((load_image(f["file"]), f"it {f['iteration']}{faces} · P {f['p_entity']:.2f} {mark}"))
        label = f"{run['prompt']} (seed {run['seed']})"
        if toy:
            label += (f" · result (it {run['result_iteration']}): judge {run['verdict'] or 'no verdict'}, "
                      f"sees {run['sees']}")
        report.images(entries, label=label)
    return report


def curves_figure(plt, entity: str, run_rows: List[dict], frame_rows: List[dict]):
    """One entity's curves over the iterations, a line per template and seed: the judging CLIP's
    similarity (a dotted line where a second face appears) and P(entity). Points are marked, so
    a run of one frame shows; P(entity)'s axis reaches past 0 and 1, so a line there shows."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  (matplotlib is there: plt is)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
    for run in (r for r in run_rows if r["entity"] == entity):
        frames = [f for f in frame_rows if f["entity"] == entity and f["template"] == run["template"]
                  and f["seed"] == run["seed"]]
        label = f"{run['template']} · seed {run['seed']}"
        x = [f["iteration"] for f in frames]
        line, = left.plot(x, [f["judge_similarity_x100"] for f in frames], marker=".", label=label)
        right.plot(x, [f["p_entity"] for f in frames], marker=".", color=line.get_color())
        if run.get("second_face") is not None:
            left.axvline(run["second_face"], color=line.get_color(), linestyle=":")
    left.set(title=f"{entity}: judging CLIP similarity x100", xlabel="iteration")
    right.set(title=f"{entity}: P(entity) among the list", xlabel="iteration", ylim=PROBABILITY_LIMITS)
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))   # iterations are whole
    left.legend(fontsize=7)
    return fig


def faces_by_default(entities_file: Path) -> bool:
    """Whether a probe of this list counts faces unless told: when the list declares its kind
    as people (a line ``# kind: people``); brands, shapes and undeclared lists are not counted."""
    return list_kind(entities_file) == "people"


def list_kind(path: Path) -> Optional[str]:
    """The kind a list declares in a comment line ``# kind: NAME`` (people, brands, shapes ...), lowercased."""
    for raw in read_text(Path(path).expanduser(), "entity list").splitlines():
        match = KIND_LINE.match(raw.strip())
        if match:
            return match.group(1).lower()
    return None


def run_probe(entities_file: Path, template_values: Sequence[str], seeds: int, engine: str, settings,
              out: Path, eval_model: str, device: str = "auto", offline: bool = False, faces: Optional[bool] = None,
              progress: bool = True, log=print, executor=None) -> Tuple[Dict[str, Path], Execution]:
    """The whole probe: check inputs, generate what is missing, judge, write the report.
    ``faces``: count faces per frame; None: when the list declares people (``faces_by_default``).
    ``executor``: where the runs are drawn (``runs.execute``; default here, one after another).

    Returns the written files and the ``runs.Execution``: whether Ctrl-C cut the generations
    short and which runs failed (the report then covers the finished runs)."""
    from ..device import resolve_device  # noqa: PLC0415
    from .engines import EngineLoader  # noqa: PLC0415
    from .judge import check_eval_model  # noqa: PLC0415
    from .runs import execute, open_experiment  # noqa: PLC0415

    if seeds < 1:
        raise ClipdrawError(f"--seeds must be at least 1, got {seeds}")
    entities = read_entities(Path(entities_file).expanduser())
    templates = read_templates(template_values)
    settings.check([engine], offline)
    check_eval_model(eval_model, offline)
    if faces is None:
        faces = faces_by_default(entities_file)
    counter = FaceCounter() if faces else None
    open_experiment(out, "probe", {**settings.record(), "engine": engine})
    specs = plan(entities, templates, seeds, engine)
    loader = EngineLoader(settings, device=device, offline=offline, keep_frames=True)
    execution = execute(specs, out, loader, keep_frames=True, progress=progress, log=log, executor=executor)
    records = execution.records
    del loader   # the generator's memory is the judge's now
    if not records:
        return {}, execution
    judge = Judge.load(eval_model, resolve_device(device), offline=offline)
    text_embeds: Dict[str, np.ndarray] = {}
    verdicts = ToyVerdicts() if settings.model == "toy" else None
    run_rows, frame_rows = [], []
    for spec in specs:
        if spec.key in records:
            row, frames = analyze_run(spec, records[spec.key], out / "runs" / spec.key, entities, judge, counter,
                                      text_embeds, verdicts)
            run_rows.append(row)
            frame_rows.extend(frames)
    notes = experiment_notes(any(r["judge_is_guide"] for r in run_rows), judge.name, execution, len(records),
                             len(specs))
    header = {"entities_file": str(entities_file), "entities": len(entities), "templates": templates,
              "seeds": seeds, "engine": engine, "faces": "counted (OpenCV's Haar cascade)" if faces else "not counted",
              "guiding CLIP": settings.guide_name if engine == "optimize" else "none (not CLIP-guided)",
              "judging CLIP": judge.description, "judge": judge.info,
              **({"analytic judge": "clipdraw.toy.judge: identified requires its acceptance"}
                 if verdicts is not None else {}),
              "settings": settings.used([engine])}
    return write_outputs(out, header, summarize(run_rows, entities, templates), run_rows, frame_rows, notes), \
        execution
