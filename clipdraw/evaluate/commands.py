"""The evaluation commands, registered onto clipdraw's command group by ``register``:

    clipdraw score IMAGE... --text T [--text T2 ...]       CLIP's scores of every pair
    clipdraw color IMAGE... [--reference GOLD]            colorimetry
    clipdraw probe ENTITY_LIST [--templates ...]          does the generator know these names?
    clipdraw compare PROMPT_FILE | --coco ... | --flickr ...   the engines on one prompt set
    clipdraw batch PROMPT_FILE [--seeds N]               every prompt x seed, no judging
    clipdraw typographic IMAGE... --classes A,B --label B  the typographic attack

probe, compare and batch draw their runs one after another here, or on Ray with --ray.

Heavy imports (torch, the models) happen inside the commands, so ``clipdraw --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click

from ..cli_checks import DEFAULT_SOURCES, FolderPath, refuse_other_engines_options, refuse_real_models_for_toy
from ..config import DEFAULT_CLIP, ENGINE_NAMES, TOY_DEFAULTS   # no torch there
from ..errors import EXIT_FAILURE, ClipdrawError, exit_interrupted, fail, note
from .typographic import LABEL_POSITIONS, LABEL_SIZES, REAL_TEMPLATE, TOY_TEMPLATE   # no numpy, PIL or torch there

DEFAULT_EVAL_MODEL = "ViT-L/14"   # as judge.DEFAULT_EVAL_MODEL, without importing torch
TOY_EVAL_MODEL = "toy-judge"      # as judge.TOY_EVAL_MODEL: the toy judge CLIP, which never guided
REAL_ITERS = {"probe": 2000, "compare": 1000, "batch": 1000}   # the real world's --iters per experiment


def _eval_model(eval_model: Optional[str], model: str) -> str:
    return eval_model or (TOY_EVAL_MODEL if model == "toy" else DEFAULT_EVAL_MODEL)


def _print_table(rows: List[dict], columns: Sequence[str]) -> None:
    """A plain aligned table on stdout."""
    from .report import format_value  # noqa: PLC0415

    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _print_rows(rows: List[dict], columns: Sequence[str], as_json: bool, as_csv: bool, extra: Optional[dict] = None) -> None:
    if as_json:
        click.echo(json.dumps({**(extra or {}), "rows": rows}, indent=2, default=str))
    elif as_csv:
        import csv  # noqa: PLC0415

        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(rows, columns)


def _guide_of(image: Path) -> Optional[dict]:
    """The CLIP that guided an image, read from the run.json beside it (clipdraw run folders)."""
    try:
        record = json.loads((image.parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("engine", "optimize") != "optimize":
        return None
    return (record.get("models") or {}).get("clip")


# --------------------------------------------------------------------------- score


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--text", "-t", "texts", multiple=True, required=True, help="A candidate text (repeat for more).")
@click.option("--eval-model", default=DEFAULT_EVAL_MODEL, show_default=True,
              help="The judging CLIP: a name, a checkpoint path, toy-judge (the toy judge CLIP, which never "
                   "guides) or toy (the toy guiding CLIP).")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--offline", is_flag=True, help="Never download the judging CLIP.")
def score(images: Sequence[Path], texts: Sequence[str], eval_model: str, as_json: bool, as_csv: bool, device: str,
          offline: bool) -> None:
    """CLIP's scores of every IMAGE with every --text.

    Per pair: cosine x 100, CLIPScore (2.5 x max(cos, 0)), P(text | image) over the texts and
    P(image | text) over the images, with the judging CLIP's logit scale.
    """
    texts = [" ".join(t.split()) for t in texts]
    if not all(texts):
        raise ClipdrawError("--text is empty: give the words to score against")
    if as_json and as_csv:
        raise ClipdrawError("--json and --csv exclude each other")
    from ..device import resolve_device  # noqa: PLC0415
    from ..io import load_image  # noqa: PLC0415
    from .judge import Judge, check_eval_model  # noqa: PLC0415
    from .scores import pair_table  # noqa: PLC0415

    pictures = [load_image(path) for path in images]   # an unreadable image stops here, before loading CLIP
    check_eval_model(eval_model, offline)
    judge = Judge.load(eval_model, resolve_device(device), offline=offline)
    table = pair_table(judge.embed_images(pictures), judge.embed_texts(texts), judge.logit_scale)
    guided = [judge.same_as(_guide_of(path)) for path in images]
    rows = [{"image": str(path), "text": text, "cosine_x100": table["cosine_x100"][i, j],
             "clip_score": table["clip_score"][i, j], "p_text_given_image": table["p_text_given_image"][i, j],
             "p_image_given_text": table["p_image_given_text"][i, j], "judge_is_guide": guided[i]}
            for i, path in enumerate(images) for j, text in enumerate(texts)]
    columns = ["image", "text", "cosine_x100", "clip_score", "p_text_given_image", "p_image_given_text",
               "judge_is_guide"]
    notes = [f"{path} was optimized against {judge.name}, the judging CLIP: its scores are not independent"
             for path, same in zip(images, guided) if same]
    _print_rows(rows, columns if (as_csv or as_json or any(guided)) else columns[:-1], as_json, as_csv,
                extra={"judge": judge.info, "notes": notes})
    if not (as_json or as_csv):
        click.echo(f"judged by {judge.name} (logit scale {judge.logit_scale:.2f})")
        for remark in notes:
            click.echo(f"note: {remark}")


# --------------------------------------------------------------------------- color


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="A gold image: adds the histogram distance (EMD, in levels) of each image to it.")
@click.option("--colors", "k", type=click.IntRange(min=1, max=16), default=5, show_default=True,
              help="Dominant colours per image (k-means).")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
def color(images: Sequence[Path], reference: Optional[Path], k: int, as_json: bool, as_csv: bool) -> None:
    """Colorimetry of IMAGE...: colourfulness, HSV statistics, dominant colours, EMD to --reference."""
    if as_json and as_csv:
        raise ClipdrawError("--json and --csv exclude each other")
    from .color import describe  # noqa: PLC0415
    from ..io import load_image  # noqa: PLC0415

    pictures = [load_image(path) for path in images]
    gold = load_image(reference) if reference is not None else None
    rows = []
    for path, picture in zip(images, pictures):
        record = describe(picture, gold, k=k)
        dominant = record.pop("dominant")
        record.pop("colourfulness_reference", None)
        rows.append({"image": str(path), **record,
                     "dominant": dominant if as_json else " ".join(f"{c['hex']}:{c['share']:.0%}" for c in dominant)})
    columns = ["image", "colourfulness", "hue_mean", "hue_concentration", "saturation_mean", "saturation_std",
               "value_mean", "value_std", "dominant"] + (["emd", "emd_r", "emd_g", "emd_b"] if gold else [])
    _print_rows(rows, columns, as_json, as_csv, extra={"reference": str(reference) if reference else None})


# --------------------------------------------------------------------------- experiments: shared options


def generation_options(function=None, *, judged: bool = True):
    """Options every experiment shares: which generator, with what settings, judged by what
    (``judged=False``: no --eval-model, for ``batch``), and where the runs are drawn (--ray)."""
    if function is None:
        return lambda f: generation_options(f, judged=judged)
    eval_model = click.option(
        "--eval-model", default=None,
        help=f"The judging CLIP: name, path, toy-judge (the toy judge CLIP, which never guides) or "
             f"toy (the toy guiding CLIP)  [default: {DEFAULT_EVAL_MODEL}; --model toy: {TOY_EVAL_MODEL}].")
    options = [
        click.option("--iters", type=click.IntRange(min=1), default=None,
                     help=f"Optimization steps per run  [default: probe 2000, compare and batch 1000; "
                          f"toy: {TOY_DEFAULTS['iters']}]."),
        click.option("--save-every", type=click.IntRange(min=1), default=None,
                     help=f"Keep a frame every K iterations  [default: 50; toy: {TOY_DEFAULTS['save_every']}]."),
        click.option("--cutn", type=click.IntRange(min=1), default=None,
                     help=f"Cutouts per step  [default: 32; toy: {TOY_DEFAULTS['cutn']}]."),
        click.option("--size", type=click.IntRange(min=1), default=None, help="Image side  [default: 256; toy: 64]."),
        click.option("--lr", type=float, default=None, help=f"Adam learning rate  [default: 0.1; toy: {TOY_DEFAULTS.get('lr', 0.1)}]."),
        click.option("--model", type=click.Choice(["openai", "toy"]), default="openai", show_default=True,
                     help="toy: the shipped toy world, offline, with its own optimizer defaults, judged by the "
                          "toy judge CLIP unless --eval-model, and by the analytic judge."),
        click.option("--clip-model", default=DEFAULT_CLIP, show_default=True, help="The guiding CLIP (optimize)."),
        click.option("--decoder", default="openai", show_default=True, help="dVAE decoder name or path."),
        click.option("--transformer", "transformer_dir", type=click.Path(path_type=Path), default=None,
                     help="Engine transformer: folder with transformer.safetensors."),
        click.option("--mega", is_flag=True, help="Engine dallemini: dalle-mega instead of dalle-mini."),
        *([eval_model] if judged else []),
        click.option("--out", type=FolderPath(), default=None,
                     help="Experiment folder; running again into it resumes  [default: outputs/<kind>-<list>]."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
        click.option("--offline", is_flag=True, help="Never touch the network."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Draw the runs on Ray (needs clipdraw[ray]): alone, a local Ray using every GPU (or "
                          "--workers CPU workers); auto or ray://HOST:PORT joins a running cluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="With --ray: how many workers  [default: one per GPU; without GPUs, 1]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def refuse_unused_options(engines: Sequence[str]) -> None:
    """The rule ``clipdraw generate`` follows, for the options of the running command."""
    ctx = click.get_current_context()
    refuse_other_engines_options(ctx, engines, [p.name for p in ctx.command.params],
                                 settings={"transformer_dir": "transformer"})


def _settings(kind: str, iters: Optional[int], save_every: Optional[int], cutn: Optional[int], size: Optional[int],
              lr: Optional[float], model: str, clip_model: str, decoder: str, transformer_dir: Optional[Path],
              mega: bool):
    """The experiment's EngineSettings: only what the user gave, and the real world's --iters per
    experiment kind; everything left None falls back to the world's defaults (engines.EngineSettings)."""
    from .engines import EngineSettings  # noqa: PLC0415

    if iters is None and model != "toy":
        iters = REAL_ITERS[kind]
    return EngineSettings(model=model, clip_model=clip_model, decoder=decoder,
                          transformer=str(transformer_dir) if transformer_dir else None, iters=iters,
                          save_every=save_every, cutn=cutn, size=size, lr=lr, mega=mega)


def default_out(kind: str, source: Path) -> Path:
    """outputs/probe-people, outputs/compare-captions_val2017, ..."""
    from ..outputs import slugify  # noqa: PLC0415

    return Path("outputs") / f"{kind}-{slugify(Path(source).stem, 40)}"


def _finish(paths: dict, interrupted: bool, failed: Optional[dict] = None) -> None:
    """The report's files on stdout; after Ctrl-C, the one line that says so (exit 130); when
    runs failed every attempt (``runs.Execution.failed``), one line naming the first (exit 1)."""
    if paths:
        main = "html" if "html" in paths else next(iter(paths))
        click.echo(f"report: {paths[main]}")
        for key in sorted(k for k in paths if k != main):
            click.echo(f"  {key}: {paths[key]}")
    if interrupted:
        kept = "the finished runs are kept and reported" if paths else "no report: nothing was finished"
        exit_interrupted(f"interrupted: {kept}; run the same command again to go on")
    if failed:
        key, why = next(iter(failed.items()))
        fail(f"{len(failed)} run(s) failed on every attempt (first: {key}: {why}); the others are kept"
             f"{' and reported' if paths else ''}; run the same command again to retry them", EXIT_FAILURE)


def _executor(ray_address: Optional[str], workers: Optional[int], device: str):
    """Where an experiment's runs are drawn: a context giving None (here, one after another), or
    a ``ray_exec.RayExecutor`` joined to Ray (shut down on leaving when it started one)."""
    if ray_address is None:
        if workers is not None:
            raise ClipdrawError("--workers goes with --ray: without it the runs are drawn one after another here")
        return contextlib.nullcontext(None)
    from .ray_exec import RayExecutor  # noqa: PLC0415

    return RayExecutor.connect(ray_address, workers, device, log=note)


# --------------------------------------------------------------------------- probe


@click.command()
@click.argument("entity_list", type=click.Path(path_type=Path))
@click.option("--templates", "-t", multiple=True,
              help="A template with {} for the entity, or a file of them (repeat for more)  "
                   "[default: 'a photo of {}', 'a photo of the face of {}', '{}'].")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Runs per prompt (seeds 0..N-1).")
@click.option("--engine", type=click.Choice(["optimize", "transformer", "dallemini"]), default="optimize",
              show_default=True)
@click.option("--faces/--no-faces", default=None,
              help="Count faces per frame with OpenCV's Haar cascade (needs clipdraw[eval])  [default: when "
                   "ENTITY_LIST declares '# kind: people', as experiments/probes/people.txt does].")
@generation_options
def probe(entity_list: Path, templates: Sequence[str], seeds: int, engine: str, faces: Optional[bool],
          iters: Optional[int],
          save_every: Optional[int], cutn: Optional[int], size: Optional[int], lr: Optional[float], model: str,
          clip_model: str, decoder: str,
          transformer_dir: Optional[Path], mega: bool, eval_model: Optional[str], out: Optional[Path], device: str,
          offline: bool, quiet: bool, ray_address: Optional[str], workers: Optional[int]) -> None:
    """Does the generator know the names in ENTITY_LIST (one per line)?

    Each entity x template x seed is drawn with frames every --save-every iterations; the
    judging CLIP scores every frame and identifies it among the list's entities; OpenCV counts
    faces. With --model toy, the analytic judge gives its verdict on every frame too, and a frame
    counts as identified only when it accepts it. Writes probe.html, CSVs and probe.json into
    --out; running again resumes. Faces are counted for lists that declare '# kind: people'.
    """
    from .probe import run_probe  # noqa: PLC0415

    refuse_unused_options([engine])
    refuse_real_models_for_toy(click.get_current_context(), model)
    settings = _settings("probe", iters, save_every, cutn, size, lr, model, clip_model, decoder, transformer_dir, mega)
    out = out or default_out("probe", entity_list)
    with _executor(ray_address, workers, device) as executor:
        paths, execution = run_probe(entity_list, templates, seeds, engine, settings, out,
                                     _eval_model(eval_model, model), device=device, offline=offline, faces=faces,
                                     progress=not quiet, log=note, executor=executor)
    _finish(paths, execution.interrupted, execution.failed)


# --------------------------------------------------------------------------- compare


@click.command()
@click.argument("prompt_file", type=click.Path(path_type=Path), required=False)
@click.option("--coco", type=click.Path(path_type=Path), default=None, help="A COCO captions JSON (with --images).")
@click.option("--flickr", type=click.Path(path_type=Path), default=None,
              help="Karpathy's dataset_flickr30k.json (with --images).")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="The folder of the dataset's images (the gold images).")
@click.option("--split", default="test", show_default=True, help="--flickr: which split (train, val, test, all).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N prompts.")
@click.option("--per-prompt", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per prompt and engine (seeds 0..K-1).")
@click.option("--engines", default=None,
              help="Comma-separated engines  [default: optimize,dallemini; --model toy: optimize,transformer].")
@click.option("--keep-frames", is_flag=True,
              help="Each run folder also keeps its frames and progress.gif (by default final.png and run.json).")
@generation_options
def compare(prompt_file: Optional[Path], coco: Optional[Path], flickr: Optional[Path], images_dir: Optional[Path],
            split: str, limit: Optional[int], per_prompt: int, engines: Optional[str], keep_frames: bool,
            iters: Optional[int],
            save_every: Optional[int], cutn: Optional[int], size: Optional[int], lr: Optional[float], model: str,
            clip_model: str, decoder: str,
            transformer_dir: Optional[Path], mega: bool, eval_model: Optional[str], out: Optional[Path], device: str,
            offline: bool, quiet: bool, ray_address: Optional[str], workers: Optional[int]) -> None:
    """The same prompts through each engine, judged by one CLIP.

    Prompts come from PROMPT_FILE (one per line, [group] headers), or from a captions set
    with its gold images: --coco captions.json --images DIR, or --flickr
    dataset_flickr30k.json --images DIR [--split test]. With --model toy, the analytic judge's
    verdict on each image and its success rate per engine come beside the CLIP scores. Writes
    compare.html, CSVs and compare.json into --out; running again resumes.
    """
    from .compare import run_compare  # noqa: PLC0415
    from .datasets import read_coco, read_flickr, read_prompt_file  # noqa: PLC0415

    sources = [s for s in (prompt_file, coco, flickr) if s is not None]
    if len(sources) != 1:
        raise ClipdrawError("give one prompt source: PROMPT_FILE, --coco captions.json --images DIR, "
                            "or --flickr dataset_flickr30k.json --images DIR")
    if flickr is None and click.get_current_context().get_parameter_source("split") not in DEFAULT_SOURCES:
        raise ClipdrawError("--split picks a part of --flickr's captions: it does not go with "
                            f"{'--coco' if coco else 'a prompt file'}")
    if prompt_file is not None:
        if images_dir is not None:
            raise ClipdrawError("--images goes with --coco or --flickr, not a prompt file")
        items = read_prompt_file(prompt_file, limit)
    elif images_dir is None:
        raise ClipdrawError(f"{'--coco' if coco else '--flickr'} needs --images DIR, the folder of its images")
    elif coco is not None:
        items = read_coco(coco, images_dir, limit, note=note)
    else:
        items = read_flickr(flickr, images_dir, None if split == "all" else split, limit, note=note)
    names = [n.strip() for n in (engines or ("optimize,transformer" if model == "toy" else "optimize,dallemini"))
             .split(",") if n.strip()]
    refuse_unused_options(list(dict.fromkeys(names)))
    refuse_real_models_for_toy(click.get_current_context(), model)
    settings = _settings("compare", iters, save_every, cutn, size, lr, model, clip_model, decoder, transformer_dir,
                         mega)
    out = out or default_out("compare", sources[0])
    with _executor(ray_address, workers, device) as executor:
        paths, execution = run_compare(items, str(sources[0]), list(dict.fromkeys(names)), per_prompt, settings,
                                       out, _eval_model(eval_model, model), device=device, offline=offline,
                                       progress=not quiet, log=note, keep_frames=keep_frames, executor=executor)
    _finish(paths, execution.interrupted, execution.failed)


# --------------------------------------------------------------------------- batch


@click.command()
@click.argument("prompt_file", type=click.Path(path_type=Path))
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per prompt (seeds 0..N-1).")
@click.option("--engine", type=click.Choice(list(ENGINE_NAMES)), default="optimize", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N prompts.")
@click.option("--keep-frames", is_flag=True,
              help="Each run folder also keeps its frames and progress.gif (by default final.png and run.json).")
@generation_options(judged=False)
def batch(prompt_file: Path, seeds: int, engine: str, limit: Optional[int], keep_frames: bool, iters: Optional[int],
          save_every: Optional[int], cutn: Optional[int], size: Optional[int], lr: Optional[float], model: str,
          clip_model: str, decoder: str, transformer_dir: Optional[Path], mega: bool, out: Optional[Path], device: str,
          offline: bool, quiet: bool, ray_address: Optional[str], workers: Optional[int]) -> None:
    """Draw every prompt of PROMPT_FILE (one per line, [group] headers) at seeds 0..N-1.

    The same resumable run folders as compare, without the judging: running again into --out
    goes on where it stopped. Writes batch.csv and batch.json (every run, its image and numbers)
    into --out. With --ray, on a local Ray or a cluster.
    """
    from .batch import run_batch  # noqa: PLC0415

    refuse_unused_options([engine])
    refuse_real_models_for_toy(click.get_current_context(), model)
    settings = _settings("batch", iters, save_every, cutn, size, lr, model, clip_model, decoder, transformer_dir, mega)
    out = out or default_out("batch", prompt_file)
    with _executor(ray_address, workers, device) as executor:
        paths, execution = run_batch(prompt_file, seeds, engine, settings, out, device=device, offline=offline,
                                     limit=limit, keep_frames=keep_frames, progress=not quiet, log=note,
                                     executor=executor)
    _finish(paths, execution.interrupted, execution.failed)


# --------------------------------------------------------------------------- typographic


def _fractions(text: str, option: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ClipdrawError(f"{option} {text!r} is not a comma-separated list of numbers, e.g. 0.12,0.2,0.3") from None


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--classes", required=True, help="Comma-separated classes to choose among, e.g. 'apple,ipod,banana'.")
@click.option("--label", required=True, help="The word written on every image, e.g. iPod.")
@click.option("--label-class", default=None,
              help="The class the label stands for  [default: the class it names: iPod -> ipod, square -> red square].")
@click.option("--true-class", default=None, help="What the images show  [default: each image's top class unlabelled].")
@click.option("--template", default=None,
              help=f"Where each class goes in its prompt, with {{}}  [default: {REAL_TEMPLATE!r}; toy CLIPs: "
                   f"{TOY_TEMPLATE!r}].")
@click.option("--sizes", default=",".join(f"{s:g}" for s in LABEL_SIZES), show_default=True,
              help="Label font sizes, as fractions of the image's side.")
@click.option("--positions", default=",".join(LABEL_POSITIONS), show_default=True,
              help=f"Label positions: {', '.join(LABEL_POSITIONS)}.")
@click.option("--box/--no-box", default=True, show_default=True,
              help="Black text on a white box (the seminar's paper label; a blank box is the control), or text alone.")
@click.option("--model", type=click.Choice(["openai", "toy"]), default="openai", show_default=True,
              help="toy: judge with the toy judge CLIP unless --eval-model.")
@click.option("--eval-model", default=None,
              help=f"The judging CLIP: name, path, toy-judge or toy  [default: {DEFAULT_EVAL_MODEL}; --model toy: "
                   f"{TOY_EVAL_MODEL}].")
@click.option("--out", type=FolderPath(), default=None,
              help="Report folder  [default: outputs/typographic-<label>].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--offline", is_flag=True, help="Never download the judging CLIP.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def typographic(images: Sequence[Path], classes: str, label: str, label_class: Optional[str],
                true_class: Optional[str], template: Optional[str], sizes: str, positions: str, box: bool, model: str,
                eval_model: Optional[str], out: Optional[Path], device: str, offline: bool, quiet: bool) -> None:
    """The typographic attack: write --label on each IMAGE and see whether CLIP now reads it.

    Each image (its centre square) gets the label at every size x position; the judging CLIP's
    zero-shot probabilities over --classes before and after give the flip rate (to the label's
    class), the change rate and the probability mass moved to the label's class. Writes
    typographic.html, CSVs, typographic.json and the labelled images into --out.
    """
    from ..device import resolve_device  # noqa: PLC0415
    from ..io import load_image  # noqa: PLC0415
    from ..outputs import check_output_root, slugify, unique_names  # noqa: PLC0415
    from .judge import Judge, check_eval_model  # noqa: PLC0415
    from .typographic import check_request, parse_classes, typographic_attack, write_report  # noqa: PLC0415

    class_list = parse_classes(classes)
    size_list = _fractions(sizes, "--sizes")
    position_list = [p.strip() for p in positions.split(",") if p.strip()]
    check_request(class_list, label, label_class, true_class, size_list, position_list, template)
    out = out or Path("outputs") / f"typographic-{slugify(label, 40)}"
    check_output_root(out)
    pictures = [load_image(path) for path in images]   # each refusal above comes before any model is loaded
    eval_model = _eval_model(eval_model, model)
    check_eval_model(eval_model, offline)
    judge = Judge.load(eval_model, resolve_device(device), offline=offline)
    result = typographic_attack(pictures, class_list, label, judge, label_class=label_class, true_class=true_class,
                                template=template, sizes=size_list, positions=position_list, box=box,
                                names=unique_names(slugify(Path(p).stem, 40) for p in images), progress=not quiet)
    overall = result.summary[0]
    flip = "none eligible" if overall["flip_rate"] is None else f"{overall['flip_rate']:.0%}"
    click.echo(f"flip rate to {result.label_class!r}: {flip} ({overall['flipped_to_label']} of {overall['eligible']}); "
               f"top class changed: {overall['changed']} of {overall['pairs']}; mean mass to the label's class: "
               f"{overall['mass_to_label']:+.3f}" + (f"; word effect over a blank box: {overall['word_effect']:+.3f}"
                                                     if "word_effect" in overall else ""))
    _finish(write_report(result, out), interrupted=False)


def register(group: click.Group) -> None:
    """Add the evaluation commands to clipdraw's command group."""
    for command in (score, color, probe, compare, batch, typographic):
        group.add_command(command)
