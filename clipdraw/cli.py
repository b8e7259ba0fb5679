"""Command line: a thin layer over the Python API.

``clipdraw PROMPT [options]`` generates (the ``generate`` subcommand is implied); other
subcommands sit beside it. Every user error ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import random
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import List, Optional

import click

from .cli_checks import DEFAULT_SOURCES, FolderPath, refuse_other_engines_options, refuse_real_models_for_toy
from .config import (DALLEMINI_DTYPES, DEFAULT_CLIP, DEFAULT_DECODER, EDIT_METHODS, ENGINE_NAMES, ENGINE_SETTINGS,
                     LOSSES, LR_SCHEDULES, RELAXATIONS, SOURCE_OPTIONS, TOY_DEFAULTS,
                     GenerationConfig, engine_options, engine_settings)
from .errors import EXIT_USAGE, ClipdrawError, exit_interrupted, note


class DefaultCommandGroup(click.Group):
    """A group where an unknown first word means ``generate``: ``clipdraw "a cat"`` works."""

    default_command = "generate"

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            meant = self.meant(args[0])
            if meant:
                raise ClipdrawError(f"{args[0]!r} is not a command: did you mean 'clipdraw {meant}'? To draw it "
                                    f"as a prompt, write 'clipdraw generate {args[0]}'")
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def meant(self, word: str) -> Optional[str]:
        """The subcommand a one-word first argument is a typo of (``tarin``: ``toy train``), if any."""
        import difflib

        if not word.isalpha() or not word.islower():
            return None
        names = {name: name for name in self.commands if name != self.default_command}
        for name, command in self.commands.items():   # one level down: 'toy train'
            for sub in getattr(command, "commands", {}):
                names.setdefault(sub, f"{name} {sub}")
        close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.75)
        return names[close[0]] if close else None


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipdraw", prog_name="clipdraw")
def cli() -> None:
    """Text-to-image with DALL-E's public dVAE guided by CLIP.

    \b
    clipdraw "a photo of albert einstein" --iters 4000
    """


def _register_commands() -> None:
    """score, color, probe and compare (clipdraw/evaluate/commands.py); toy (clipdraw/toy/commands.py)."""
    from .evaluate.commands import register
    from .toy.commands import toy

    register(cli)
    cli.add_command(toy)


_register_commands()



# --------------------------------------------------------------------------- generate

SOURCE_FIELDS = {name for names in SOURCE_OPTIONS.values() for name in names}   # engines.ModelSource's


def _default_text(name: str) -> str:
    """The defaults of option ``name`` as the settings dataclasses give them, per engine and world
    where they differ: '[default: 32; toy: 16]', '[default: transformer 32; dallemini 256]'."""
    values = []
    for engine in ENGINE_NAMES:
        found = [f for f in fields(ENGINE_SETTINGS[engine]) if f.name == name and name in engine_options(engine)]
        if not found or found[0].default is None or found[0].default is MISSING:
            continue
        values.append((engine, found[0].default))
        if engine == "optimize" and TOY_DEFAULTS.get(name, found[0].default) != found[0].default:
            values.append(("toy", TOY_DEFAULTS[name]))
    shown = [(who, ",".join(v) if isinstance(v, tuple) else v) for who, v in values]
    if not shown:
        return ""
    if len({v for _, v in shown}) == 1:
        return f"  [default: {shown[0][1]}]"
    if all(who in ("optimize", "toy") for who, _ in shown):
        return f"  [default: {shown[0][1]}; toy: {shown[1][1]}]"
    return f"  [default: {'; '.join(f'{who} {v}' for who, v in shown)}]"


def engine_option(*flags: str, help: str, **kwargs):
    """An option of some engines: no click default (the engine's settings hold it, shown in the
    help), so that an option given explicitly can be told from one left out."""
    named = [f for f in flags if not f.startswith("-")]
    flags = tuple(f for f in flags if f.startswith("-"))
    name = kwargs.pop("name", None) or (named[0] if named else flags[0].lstrip("-").split("/")[0].replace("-", "_"))
    shown = help if "[default:" in help else help + _default_text(name)   # a help may say its defaults itself
    return click.option(*flags, name, default=None, help=shown, **kwargs)


class EngineCommand(click.Command):
    """``generate``'s help lists the options by engine, from ``clipdraw.config.engine_options``."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        sections = [("Options for every engine", [n for n in records if n not in ALL_ENGINE_OPTIONS])]
        sections += [(f"--engine {engine}", [n for n in records if n in engine_options(engine)])
                     for engine in ENGINE_NAMES]
        for title, names in sections:
            with formatter.section(title):
                formatter.write_dl([records[n] for n in names if records[n]])


ALL_ENGINE_OPTIONS = {name for engine in ENGINE_NAMES for name in engine_options(engine)}


@cli.command(cls=EngineCommand)
@click.argument("prompt", required=False)
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="optimize", show_default=True,
              help="optimize: CLIP-guided dVAE latents; transformer: the toy autoregressive model (--model toy); "
                   "dallemini: dalle-mini/mega via min-dalle.")
@click.option("--model", type=click.Choice(["openai", "toy"]), default="openai", show_default=True,
              help="openai: real CLIP + dVAE (downloaded); toy: the small trained world shipped with clipdraw.")
@click.option("--seed", type=int, default=None, help="Random seed (default: a random one, recorded in run.json).")
@click.option("--out", type=FolderPath(), default=Path("outputs"), show_default=True,
              help="Folder that receives one sub-folder per run.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--offline", is_flag=True, help="Never touch the network; use cached or given files only.")
@click.option("--gif/--no-gif", default=True, show_default=True,
              help="Write progress.gif of the frames (dallemini: --no-gif also skips decoding the partial images).")
@click.option("--mp4", is_flag=True,
              help="Also write progress.mp4 (needs imageio-ffmpeg: pip install -e '.[mp4]' in the checkout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@engine_option("--iters", type=click.IntRange(min=1), help="Optimization steps.")
@engine_option("--size", type=click.IntRange(min=1), help="Image side in pixels, a multiple of 8.")
@engine_option("--cutn", type=click.IntRange(min=1), help="Cutouts scored by CLIP per step.")
@engine_option("--cut-min-scale", type=float, help="Smallest cutout side, as a share of the image.")
@engine_option("--cut-pow", type=float, help="Cutout sizes: < 1 favours large cutouts, > 1 small ones.")
@engine_option("--overview", type=click.IntRange(min=0), help="How many of the cutouts show the whole image.")
@engine_option("--augs", name="augmentations",
               help="Augmentations of the cutouts: some of affine,perspective,jitter,noise,flip, or none.")
@engine_option("--lr", type=float, help="Adam learning rate.")
@engine_option("--lr-schedule", type=click.Choice(LR_SCHEDULES), help="Learning rate over the run.")
@engine_option("--relaxation", type=click.Choice(RELAXATIONS), help="How latent logits become token probabilities.")
@engine_option("--tau", type=float, help="Softmax temperature (gumbel: start of the schedule).")
@engine_option("--tau-end", type=float, help="Gumbel temperature at the last step.")
@engine_option("--loss", type=click.Choice(LOSSES), help="cosine, or spherical (great-circle distance squared).")
@engine_option("--tv-weight", type=click.FloatRange(min=0),
               help="Total-variation penalty: flatter regions, cleaner edges.")
@engine_option("--region-weight", type=click.FloatRange(min=0),
               help="For a prompt \"A above B\" (below, left of, right of): also ask for \"A on the top\" of the "
                    "picture with its bottom half painted over, and for B likewise, with this weight; 0: off.")
@engine_option("--region-cuts", type=click.IntRange(min=1), help="Cutouts of each half-picture per step (--region-weight).")
@engine_option("--shape-weight", type=click.FloatRange(min=0),
               help="Also ask for the prompt without its colour words on a silhouette of the picture, with this "
                    "weight (for a guide taught silhouettes, as the toy guide is); 0: off.")
@engine_option("--shape-cuts", type=click.IntRange(min=1), help="Cutouts of the silhouette per step (--shape-weight).")
@engine_option("--ema", type=click.FloatRange(min=0, max=1, max_open=True),
               help="Frames show an exponential average of the latents, with this decay per step; 0: off.")
@engine_option("--judge-model", help="A CLIP that never guides: it scores every saved frame, and final.png is the "
                                     "frame it ranks best. Name (ViT-B/16, RN50), path, toy-judge, or none  "
                                     "[default: none; toy: toy-judge].")
@engine_option("--patience", type=click.IntRange(min=0),
               help="Stop when the judge's best frame is K saved frames old; 0: run every iteration.")
@engine_option("--pick-flatness", type=click.FloatRange(min=0),
               help="Rank frames by the judge's log P(prompt) among the prompt's toy twins minus this times the "
                    "off-colour, stray and missing foreground (worlds of flat shapes); 0: the judge's cosine.")
@engine_option("--pick-objects", type=click.FloatRange(min=0),
               help="For a prompt naming two objects, add this times the judge's and the guide's log P(object) "
                    "among its toy twins, each object read off one foreground part shown alone; 0: off.")
@engine_option("--pick-from", type=click.FloatRange(min=0, max=1, max_open=True),
               help="The judge picks among the frames from this share of the run on (earlier ones only when none "
                    "later was saved); 0: every frame.")
@engine_option("--save-every", type=click.IntRange(min=1),
               help="A frame every K iterations (transformer: K tokens)  "
                    f"[default: {ENGINE_SETTINGS['optimize']().save_every}; toy: {TOY_DEFAULTS['save_every']}; "
                    "transformer: one row of the token grid]")
@engine_option("--batch", type=click.IntRange(min=1),
               help="Optimize N images at once, seeds SEED..SEED+N-1, each written to its own run folder.")
@engine_option("--candidates", type=click.IntRange(min=1),
               help="Optimize N latents side by side for each image and keep the one whose best frame the judge "
                    "ranks highest (without a judge: the guide's similarity); N times the work per step.")
@engine_option("--init-image", type=click.Path(path_type=Path),
               help="Start from this image's dVAE tokens (read upright, centre-cut to --size); frame 0 is its redraw  "
                    "[default: none; toy: the blank canvas].")
@engine_option("--init-scale", type=float,
               help="How firmly the start holds: the logit gap between the image's token and every other  "
                    "[default: 10.0; toy: 3.0 from the blank canvas, 10.0 from an image given].")
@engine_option("--init-weight", type=click.FloatRange(min=0),
               help="Pixel MSE to the init image, added to the loss: keeps the result close to it.")
@engine_option("--image-prompt", "image_prompts", multiple=True, metavar="PATH[:WEIGHT]",
               help="An image whose CLIP embedding is a target beside the text (repeatable; a negative weight "
                    "pushes away). With image prompts alone, PROMPT may be left out.")
@engine_option("--encoder", help="dVAE encoder name or encoder.pkl path, for --init-image and edits  "
                                 "[default: openai].")
@engine_option("--compile", is_flag=True, help="torch.compile the decoder and CLIP's image encoder (with --low-memory: "
                                               "CLIP's alone): slow to start, faster steps.")
@engine_option("--low-memory", is_flag=True,
               help="Keep one bit per decoder ReLU value instead of its activations (backward by hand, by bands of "
                    "rows) and recompute CLIP's: less memory for large --size.")
@engine_option("--clip-model", help=f"CLIP model name or checkpoint path; several separated by commas guide together "
                                    f"(ViT-B/32,ViT-B/16: the mean of their cosines). dallemini: for scoring and --rerank  "
                                    f"[default: {DEFAULT_CLIP}].")
@engine_option("--decoder", help=f"dVAE decoder name or decoder.pkl path  [default: {DEFAULT_DECODER}].")
@engine_option("--dtype", type=click.Choice(["auto", *DALLEMINI_DTYPES]),
               help="Precision. optimize: the dVAE decoder and CLIP's autocast (auto: float16 on CUDA, float32 on a "
                    "CPU); dallemini: the transformer (float16/bfloat16 need CUDA)  [default: optimize auto; "
                    "dallemini float32].")
@engine_option("--transformer", type=click.Path(path_type=Path),
               help="Folder with transformer.safetensors (default: the toy one; one from 'clipdraw toy train --coco' "
                    "draws with the openai dVAE).")
@engine_option("--temperature", type=float, help="Sampling temperature.")
@engine_option("--top-k", type=click.IntRange(min=0), help="Sample among the k likeliest tokens, 0: all.")
@engine_option("--mega/--mini", help="dalle-mega instead of dalle-mini.")
@engine_option("--grid", type=click.IntRange(min=1), help="Draw N x N images at once; final.png is their grid.")
@engine_option("--supercondition", type=float, help="Weight of the prompt over no prompt (classifier-free guidance).")
@engine_option("--rerank", metavar="N:K",
               help="Draw N candidates (N a multiple of grid*grid), keep the K that CLIP (--clip-model) ranks best.")
@click.pass_context
def generate(ctx: click.Context, prompt: Optional[str], engine: str, model: str, seed: Optional[int], out: Path,
             device: str, offline: bool, gif: bool, mp4: bool, quiet: bool, **options) -> None:
    """Draw PROMPT: by default by optimizing dVAE latents under CLIP guidance.

    \b
    PROMPT may combine weighted texts:  "a tree|a house:0.5|blurry:-1"
    or move from one prompt to the next: "a red circle^a blue square", "0:a red circle^600:a blue square"
    """
    _draw(ctx, prompt or "", engine, model, seed, out, device, offline, gif, mp4, quiet, options)


def _draw(ctx: click.Context, prompt: str, engine: str, model: str, seed: Optional[int], out: Path, device: str,
          offline: bool, gif: bool, mp4: bool, quiet: bool, options: dict, settings_set: Optional[dict] = None) -> None:
    """generate and edit: ``options`` as the command line gave them, ``settings_set`` fixed by the command."""
    # Cheap checks first, before torch is imported: nothing is loaded or written for a bad command.
    refuse_other_engines_options(ctx, [engine], options)
    given = {name: value for name, value in options.items() if ctx.get_parameter_source(name) not in DEFAULT_SOURCES}
    if engine != "dallemini":   # which refuses --model toy itself, with the reason
        refuse_real_models_for_toy(ctx, model)
    own_fields = {f.name for f in fields(ENGINE_SETTINGS[engine])}
    settings_given = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if k in own_fields}
    settings_given.update(settings_set or {})
    if engine == "dallemini":
        settings_given["progressive"] = gif
    seed = random.randrange(2**31) if seed is None else seed
    settings = engine_settings(engine, model, seed=seed, **settings_given)

    from .engines import ModelSource, engine_class
    from .outputs import check_output_root, mp4_available

    source = ModelSource(model=model, device=device, offline=offline,
                         **{k: str(v) if isinstance(v, Path) else v for k, v in given.items()
                            if k in SOURCE_FIELDS and k not in own_fields})
    runner_class = engine_class(engine)
    runner_class.check_prompt(prompt, settings)
    runner_class.check(settings, source)
    check_output_root(out)
    if mp4 and not mp4_available():
        raise ClipdrawError("--mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg (in a checkout: pip install -e '.[mp4]')")
    if source.target().type == "cpu" and engine == "optimize" and not settings.low_memory:
        from .device import keep_freed_memory

        keep_freed_memory()   # steps re-use their freed tensors instead of faulting in fresh pages
    runner = runner_class.load(settings, source)   # before the run folder exists: a failed load writes nothing
    if engine == "optimize" and settings.batch > 1:
        _generate_batch(runner, prompt, out, gif, mp4, quiet)
        return
    _generate_one(runner, prompt, seed, out, gif, mp4, quiet)


EDIT_OPTIONS = ("seed", "out", "model", "device", "offline", "gif", "mp4", "quiet", "iters", "size", "cutn",
                "cut_min_scale", "cut_pow", "overview", "augmentations", "lr", "lr_schedule", "relaxation", "tau",
                "tau_end", "loss", "tv_weight", "ema", "judge_model", "patience", "candidates", "save_every",
                "init_scale", "init_weight", "image_prompts", "encoder", "clip_model", "decoder", "dtype", "compile", "low_memory")


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--from", "source_text", required=True, help="A caption of IMAGE as it is (\"a photo of a cat\").")
@click.option("--to", "target_text", required=True, help="The same caption, changed (\"a photo of a dog\").")
@click.option("--method", type=click.Choice(EDIT_METHODS), default=None,
              help="direction: move the image's CLIP embedding along to - from (StyleGAN-NADA); slerp: aim at the "
                   "image's embedding turned toward to - from by --strength (DALL-E 2)  "
                   f"[default: {GenerationConfig.edit_method}]")
@click.option("--strength", type=click.FloatRange(min=0), default=None,
              help="direction: the loss's weight; slerp: the share of the way toward the text difference  "
                   f"[default: {GenerationConfig.edit_strength}]")
@click.pass_context
def edit(ctx: click.Context, image: Path, source_text: str, target_text: str, method: Optional[str],
         strength: Optional[float], seed: Optional[int], out: Path, model: str, device: str, offline: bool,
         gif: bool, mp4: bool, quiet: bool, **options) -> None:
    """Edit IMAGE from one caption to another (a text-diff edit): start from its dVAE tokens and
    move its CLIP embedding from --from toward --to, staying close to it (--init-weight).

    \b
    clipdraw edit cat.png --from "a photo of a cat" --to "a photo of a dog"
    clipdraw toy scene "a red circle" red.png && clipdraw edit red.png --from "a red circle" --to "a blue circle" --model toy
    """
    if not target_text.strip():
        raise ClipdrawError("--to is empty: give the caption the image moves toward")
    fixed = {"init_image": str(image), "edit_from": source_text,
             **({"edit_method": method} if method else {}), **({"edit_strength": strength} if strength is not None else {})}
    _draw(ctx, target_text, "optimize", model, seed, out, device, offline, gif, mp4, quiet, options, fixed)


def _generate_one(runner, prompt: str, seed: int, out: Path, gif: bool, mp4: bool, quiet: bool) -> None:
    from .outputs import RunWriter, make_run_dir

    described = runner.describe()
    run_dir = make_run_dir(out, prompt or "image prompt", seed)
    writer = RunWriter(run_dir, prompt, asdict(runner.settings_at(seed)), described, gif=gif, mp4=mp4,
                       engine=runner.name)
    note(f"{prompt!r} seed {seed}, {runner.name} on {described['device']} -> {run_dir}")
    try:
        with writer.on_failure():
            result = runner.generate(prompt, seed, on_frame=writer.add_frame, progress=not quiet)
            writer.finish(result)
    except KeyboardInterrupt:   # before the first frame: an empty run folder is no run
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        exit_interrupted("interrupted before the first frame: nothing kept")
    click.echo(f"{run_dir / 'final.png'}  ({runner.summary_line(result)})")
    if result.interrupted:
        exit_interrupted(f"interrupted at {'iteration' if runner.step_unit == 'it' else runner.step_unit} "
                         f"{result.iterations_done}; kept "
                         f"{len(writer.frame_files)} frame(s) in {run_dir}")


def _generate_batch(runner, prompt: str, out: Path, gif: bool, mp4: bool, quiet: bool) -> None:
    """--batch N: N seeds optimized together, each written to its own run folder as a run of
    that seed alone would be (its seed in run.json and the PNGs, plus its place in the batch)."""
    from .outputs import RunWriter, make_run_dir

    settings, described = runner.settings, runner.describe()
    seeds = range(settings.seed, settings.seed + settings.batch)
    writers = [RunWriter(make_run_dir(out, prompt or "image prompt", seed), prompt, asdict(runner.settings_at(seed)), described,
                         gif=gif, mp4=mp4) for seed in seeds]
    note(f"{prompt!r} seeds {seeds[0]}..{seeds[-1]} on {described['device']} "
         f"-> {', '.join(str(w.run_dir) for w in writers)}")
    try:
        with contextlib.ExitStack() as stack:
            for writer in writers:
                stack.enter_context(writer.on_failure())
            results = runner.generate_batch(prompt, settings.seed, progress=not quiet,
                                            on_frame=lambda index, frame: writers[index].add_frame(frame))
            for writer, result in zip(writers, results):
                writer.finish(result)
    except KeyboardInterrupt:   # before the first frame: empty run folders are no runs
        for writer in writers:
            if not any(writer.run_dir.iterdir()):
                writer.run_dir.rmdir()
        exit_interrupted("interrupted before the first frame: nothing kept")
    for writer, result in zip(writers, results):
        click.echo(f"{writer.run_dir / 'final.png'}  ({runner.summary_line(result)})")
    note(f"{results[0].seconds_per_iteration:.3f} s/it for {settings.batch} images")
    if results[0].interrupted:
        exit_interrupted(f"interrupted at iteration {results[0].iterations_done}; kept the frames so far in "
                         f"{len(writers)} run folders")


edit.params.extend(p for p in generate.params if p.name in EDIT_OPTIONS)


MEMORY_HINTS = {   # (command, engine) -> what to lower when it runs out of memory; errors.MEMORY_HINT otherwise
    ("generate", "transformer"): "run it with --device cpu, or free memory",
    ("generate", "dallemini"): "lower --grid or the N of --rerank, or use --dtype float16 on CUDA",
    ("probe", None): "lower --cutn or --size, or judge with a smaller --eval-model",
    ("compare", None): "lower --cutn or --size, or judge with a smaller --eval-model",
    ("score", None): "score fewer images at once, or judge with a smaller --eval-model",
    ("color", None): "give fewer or smaller images",
    ("toy", None): "lower --size or --scale",
}


def _memory_hint(argv: Optional[List[str]]) -> str:
    """What to lower when the command in ``argv`` runs out of memory."""
    from .errors import MEMORY_HINT

    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    command = args[0] if args and args[0] in cli.commands else "generate"
    engine = next((a.split("=", 1)[1] for a in args if a.startswith("--engine=")), None)
    engine = engine or next((b for a, b in zip(args, args[1:]) if a == "--engine"), None)
    return MEMORY_HINTS.get((command, engine if command == "generate" else None), MEMORY_HINT)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: run the CLI; every failure ends as one line on stderr and an exit
    code (``clipdraw.errors.describe_failure``): 2 for bad input, 1 for a failed write, lack
    of memory or an unexpected error, 130 for Ctrl-C. ``CLIPDRAW_DEBUG=1`` shows the traceback."""
    from .errors import debug_requested, fail, fail_with

    try:
        cli.main(args=argv, prog_name="clipdraw", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        exit_interrupted()
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:   # `clipdraw` or `clipdraw toy` alone (click >= 8.2)
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.ClickException as e:
        fail(e.format_message(), EXIT_USAGE)
    except Exception as e:
        if debug_requested():
            raise
        fail_with(e, memory_hint=_memory_hint(argv))
    sys.exit(0)
