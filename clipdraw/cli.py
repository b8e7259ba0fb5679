"""Command line: a thin layer over the Python API.

``clipdraw PROMPT [options]`` generates (the ``generate`` subcommand is implied); other
subcommands sit beside it. Every user error ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import random
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import List, Optional

import click

from .config import (DEFAULT_AUGMENTATIONS, LOSSES, LR_SCHEDULES, RELAXATIONS, TOY_DEFAULTS, TOY_STAGES,
                     GenerationConfig, toy_config)
from .errors import ClipdrawError

EXIT_USAGE = 2
DEFAULTS = {f.name: f.default for f in fields(GenerationConfig)}   # one source for API and CLI defaults
EXIT_INTERRUPTED = 130


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


def _register_evaluation() -> None:
    """score, color, probe and compare (clipdraw/evaluate/commands.py)."""
    from .evaluate.commands import register

    register(cli)


_register_evaluation()


@cli.command()
@click.argument("prompt")
@click.option("--iters", type=click.IntRange(min=1), default=None,
              help=f"Optimization steps  [default: {DEFAULTS['iters']}; toy: {TOY_DEFAULTS['iters']}].")
@click.option("--seed", type=int, default=None, help="Random seed (default: a random one, recorded in run.json).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True,
              help="Folder that receives one sub-folder per run.")
@click.option("--save-every", type=click.IntRange(min=1), default=None,
              help=f"Save a frame every K iterations  [default: {DEFAULTS['save_every']}; toy: "
                   f"{TOY_DEFAULTS['save_every']}].")
@click.option("--cutn", type=click.IntRange(min=1), default=None,
              help=f"Cutouts per step  [default: {DEFAULTS['cutn']}; toy: {TOY_DEFAULTS['cutn']}].")
@click.option("--cut-min-scale", type=float, default=None,
              help=f"Smallest cutout side, as a share of the image  [default: {DEFAULTS['cut_min_scale']}; "
                   f"toy: {TOY_DEFAULTS['cut_min_scale']}].")
@click.option("--cut-pow", type=float, default=None,
              help=f"Cutout sizes: < 1 favours large cutouts, > 1 small ones  [default: {DEFAULTS['cut_pow']}].")
@click.option("--overview", type=click.IntRange(min=0), default=None,
              help=f"How many of the cutouts show the whole image  [default: {DEFAULTS['overview']}; "
                   f"toy: {TOY_DEFAULTS['overview']}].")
@click.option("--tv-weight", type=click.FloatRange(min=0), default=None,
              help=f"Total-variation penalty: flatter regions, cleaner edges  [default: {DEFAULTS['tv_weight']}; "
                   f"toy: {TOY_DEFAULTS['tv_weight']}].")
@click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help=f"Frames show an exponential average of the latents, with this decay per step; 0: off  "
                   f"[default: {DEFAULTS['ema']}; toy: {TOY_DEFAULTS['ema']}].")
@click.option("--judge-model", default=None,
              help="A CLIP that never guides: it scores every saved frame, and final.png is the frame it ranks "
                   "best. Name (ViT-B/16, RN50), path, toy-judge, or none  [default: none; toy: toy-judge].")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop when the judge's best frame is K saved frames old; 0: run every iteration.")
@click.option("--lr", type=float, default=DEFAULTS["lr"], show_default=True, help="Adam learning rate.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=DEFAULTS["lr_schedule"], show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=None,
              help=f"Image side in pixels, a multiple of 8  [default: {DEFAULTS['size']}; toy: 64].")
@click.option("--relaxation", type=click.Choice(RELAXATIONS), default=None,
              help=f"How latent logits become token probabilities  [default: {DEFAULTS['relaxation']}; "
                   f"toy: {TOY_DEFAULTS['relaxation']}].")
@click.option("--tau", type=float, default=DEFAULTS["tau"], show_default=True, help="Temperature (gumbel: start of the schedule).")
@click.option("--tau-end", type=float, default=DEFAULTS["tau_end"], show_default=True, help="Gumbel temperature at the last step.")
@click.option("--loss", type=click.Choice(LOSSES), default=DEFAULTS["loss"], show_default=True)
@click.option("--augs", default=",".join(DEFAULT_AUGMENTATIONS), show_default=True,
              help="Augmentations of the cutouts: some of affine,perspective,jitter,noise,flip, or none.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--clip-model", default="ViT-B/32", show_default=True, help="CLIP model name or checkpoint path.")
@click.option("--decoder", default="openai", show_default=True, help="dVAE decoder name or decoder.pkl path.")
@click.option("--model", type=click.Choice(["openai", "toy"]), default="openai", show_default=True,
              help="openai: real CLIP + dVAE (downloaded); toy: the small trained world shipped with clipdraw.")
@click.option("--engine", type=click.Choice(["optimize", "transformer", "dallemini"]), default="optimize",
              show_default=True, help="optimize: CLIP-guided dVAE latents; transformer: the toy autoregressive "
                                      "model (--model toy); dallemini: dalle-mini/mega via min-dalle.")
@click.option("--transformer", "transformer_dir", type=click.Path(path_type=Path), default=None,
              help="--engine transformer: folder with transformer.safetensors (default: the toy one; one from "
                   "'clipdraw toy train --coco' draws with the openai dVAE).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Transformer sampling temperature.")
@click.option("--top-k", type=click.IntRange(min=0), default=None,
              help="Transformer engines: sample among the k likeliest tokens, 0: all  [default: 32; dallemini: 256].")
@click.option("--mega/--mini", default=False, show_default=True, help="dallemini: dalle-mega instead of dalle-mini.")
@click.option("--grid", type=click.IntRange(min=1), default=1, show_default=True,
              help="dallemini: draw N x N images at once; final.png is their grid.")
@click.option("--supercondition", type=float, default=16.0, show_default=True,
              help="dallemini: weight of the prompt over no prompt (classifier-free guidance).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default=None,
              help="Precision. optimize: the dVAE decoder and CLIP's autocast (auto: float16 on CUDA, float32 "
                   "on CPU); dallemini: the transformer (float16/bfloat16 need CUDA)  [default: auto; dallemini: "
                   "float32].")
@click.option("--rerank", default=None, metavar="N:K",
              help="dallemini: draw N candidates (N a multiple of grid*grid), keep the K that CLIP "
                   "(--clip-model) ranks best.")
@click.option("--gif/--no-gif", default=True, show_default=True,
              help="Write progress.gif of the frames (dallemini: --no-gif also skips decoding the partial images).")
@click.option("--mp4", is_flag=True, help="Also write progress.mp4 (needs: pip install clipdraw[mp4]).")
@click.option("--offline", is_flag=True, help="Never touch the network; use cached or given files only.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULTS["batch"], show_default=True,
              help="Optimize N images at once, seeds SEED..SEED+N-1, each written to its own run folder.")
@click.option("--compile", "compile_step", is_flag=True,
              help="torch.compile the decoder and CLIP's image encoder: slow to start, faster steps.")
@click.option("--low-memory", is_flag=True,
              help="Keep one bit per decoder ReLU value instead of its activations (backward by hand, "
                   "by bands of rows) and recompute CLIP's: less memory for large --size.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def generate(prompt: str, iters: Optional[int], seed: Optional[int], out: Path, save_every: Optional[int],
             cutn: Optional[int], cut_min_scale: Optional[float], cut_pow: Optional[float], overview: Optional[int],
             tv_weight: Optional[float], ema: Optional[float], judge_model: Optional[str], patience: int, lr: float,
             lr_schedule: str, size: Optional[int], relaxation: Optional[str], tau: float, tau_end: float, loss: str, augs: str,
             device: str, clip_model: str, decoder: str, model: str, engine: str, transformer_dir: Optional[Path],
             temperature: float,
             top_k: Optional[int], mega: bool, grid: int, supercondition: float, dtype: str, rerank: Optional[str],
             gif: bool, mp4: bool, offline: bool, batch: int, compile_step: bool, low_memory: bool,
             quiet: bool) -> None:
    """Draw PROMPT by optimizing dVAE latents under CLIP guidance.

    PROMPT may combine weighted texts: "a tree|a house:0.5|blurry:-1".
    """
    from .prompts import parse_prompts

    # Cheap checks first, before torch is even imported: nothing is loaded or written for a bad command.
    parse_prompts(prompt)
    if seed is None:
        seed = random.randrange(2**31)
    if engine != "optimize" and (batch > 1 or compile_step or low_memory):
        raise ClipdrawError(f"--batch, --compile and --low-memory are for --engine optimize, not {engine}")
    judge_model = judge_model or ("toy-judge" if model == "toy" and engine == "optimize" else "none")
    if dtype is not None and engine == "transformer":
        raise ClipdrawError("--dtype sets the optimizer's or dalle-mini's precision: not for --engine transformer")
    if dtype == "auto" and engine == "dallemini":
        raise ClipdrawError("--engine dallemini takes --dtype float32, float16 or bfloat16")
    if patience and engine != "optimize":
        raise ClipdrawError(f"--patience stops the optimizer early: not for --engine {engine}")
    if judge_model != "none" and engine != "optimize":
        raise ClipdrawError(f"--judge-model ranks the optimizer's frames: not for --engine {engine}")
    if judge_model == "toy-judge" and model != "toy":
        raise ClipdrawError("--judge-model toy-judge judges the toy world: add --model toy, or name a real CLIP")
    if patience and judge_model == "none":
        raise ClipdrawError("--patience stops when the judge's score stops rising: it needs --judge-model")
    if engine == "transformer" and model != "toy" and transformer_dir is None:
        raise ClipdrawError("--engine transformer needs --model toy, or --transformer DIR from "
                            "'clipdraw toy train --coco' to draw with the openai dVAE")
    if transformer_dir is not None and not (transformer_dir / "transformer.safetensors").is_file():
        raise ClipdrawError(f"no transformer.safetensors in {transformer_dir}")
    if engine == "dallemini":
        if model == "toy":
            raise ClipdrawError("--engine dallemini runs min-dalle's own models: leave out --model toy")
        from .dallemini import DalleMiniConfig

        config = DalleMiniConfig(seed=seed, mega=mega, grid=grid, top_k=256 if top_k is None else top_k,
                                 temperature=temperature, supercondition=supercondition, dtype=dtype or "float32", rerank=rerank,
                                 progressive=gif)
        _generate_dallemini(prompt, config, out, device, clip_model, mp4, offline, quiet)
        return
    if engine == "transformer":
        from .toy.engine import SamplingConfig

        config = SamplingConfig(seed=seed, temperature=temperature, top_k=32 if top_k is None else top_k)
    else:
        given = dict(iters=iters, size=size, cutn=cutn, cut_min_scale=cut_min_scale, cut_pow=cut_pow,
                     overview=overview, tv_weight=tv_weight, ema=ema, relaxation=relaxation, save_every=save_every)
        config = (toy_config if model == "toy" else GenerationConfig)(
            seed=seed, lr=lr, lr_schedule=lr_schedule, tau=tau, tau_end=tau_end, loss=loss, augmentations=augs,
            batch=batch, compile=compile_step, low_memory=low_memory, patience=patience,
            **{k: v for k, v in given.items() if v is not None})

    from .device import keep_freed_memory, resolve_device
    from .models import load_models
    from .optimize import generate as run_generation
    from .outputs import RunWriter, check_output_root, make_run_dir, mp4_available

    target = resolve_device(device)
    check_output_root(out)
    if target.type == "cpu" and not low_memory:
        keep_freed_memory()   # steps re-use their freed tensors instead of faulting in fresh pages
    if mp4 and not mp4_available():
        raise ClipdrawError("--mp4 needs imageio-ffmpeg: pip install 'clipdraw[mp4]' (or pip install imageio-ffmpeg)")

    if model == "toy":
        from .toy.engine import load_toy_models

        models = load_toy_models(target, judge=judge_model == "toy-judge", precision=dtype or "auto")
    else:
        models = load_models(clip_model=clip_model, decoder=decoder, device=target, offline=offline,
                             precision=dtype or "auto")
    if judge_model not in ("none", "toy-judge"):
        from .models import load_clip

        models.judge, models.info["judge"] = load_clip(judge_model, device=target, offline=offline)
    sampler = None
    if engine == "transformer":   # loaded before the run folder exists: a mismatched pair writes nothing
        from .toy.engine import TransformerEngine

        sampler = TransformerEngine(models, transformer_dir)
    if engine == "optimize" and config.batch > 1:
        _generate_batch(models, prompt, config, out, gif, mp4, quiet)
        return
    run_dir = make_run_dir(out, prompt, seed)
    writer = RunWriter(run_dir, prompt, asdict(config), {"models": models.info, "device": str(models.device)},
                       gif=gif, mp4=mp4, engine=engine)
    click.echo(f"clipdraw: {prompt!r} seed {seed} on {models.device} -> {run_dir}", err=True)
    with writer.on_failure():
        if engine == "transformer":
            result = sampler.generate(prompt, config, on_frame=writer.add_frame, progress=not quiet)
        else:
            result = run_generation(models, prompt, config, on_frame=writer.add_frame, progress=not quiet)
        writer.finish(result)
    click.echo(f"{run_dir / 'final.png'}  ({_describe_result(result)})")
    if result.interrupted:
        click.echo(f"clipdraw: interrupted at iteration {result.iterations_done}; kept {len(writer.frame_files)} "
                   f"frame(s) in {run_dir}", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _describe_result(result) -> str:
    """Which frame final.png is and the numbers that go with it, each named for what it measures."""
    chosen = result.chosen_frame
    unit = "token" if result.config.__class__.__name__ == "SamplingConfig" else "it"
    parts = [f"{unit} {chosen.iteration} of {result.iterations_done}"
             + (", the judge's pick" if chosen.judge_score is not None else "")
             + (", stopped early" if result.stopped_early else ""),
             f"guide CLIP similarity of the whole image {chosen.similarity:.4f}"]
    if chosen.judge_score is not None:
        parts.append(f"judge {chosen.judge_score:.4f}")
    parts.append(f"{result.seconds_per_iteration:.3f} s/{unit}")
    return "; ".join(parts)


def _generate_batch(models, prompt: str, config: GenerationConfig, out: Path, gif: bool, mp4: bool,
                    quiet: bool) -> None:
    """--batch N: N seeds optimized together, each written to its own run folder as a run of
    that seed alone would be (its seed in run.json and the PNGs, plus its place in the batch)."""
    from .optimize import generate_batch
    from .outputs import RunWriter, make_run_dir

    info = {"models": models.info, "device": str(models.device)}
    writers = []
    for index in range(config.batch):
        seed = config.seed + index
        writers.append(RunWriter(make_run_dir(out, prompt, seed), prompt, asdict(replace(config, seed=seed)), info,
                                 gif=gif, mp4=mp4))
    click.echo(f"clipdraw: {prompt!r} seeds {config.seed}..{config.seed + config.batch - 1} on {models.device} "
               f"-> {', '.join(str(w.run_dir) for w in writers)}", err=True)
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer.on_failure())
        results = generate_batch(models, prompt, config, on_frame=lambda index, frame: writers[index].add_frame(frame),
                                 progress=not quiet)
        for writer, result in zip(writers, results):
            writer.finish(result)
    for writer, result in zip(writers, results):
        click.echo(f"{writer.run_dir / 'final.png'}  ({_describe_result(result)})")
    click.echo(f"{results[0].seconds_per_iteration:.3f} s/it for {config.batch} images", err=True)
    if results[0].interrupted:
        click.echo(f"clipdraw: interrupted at iteration {results[0].iterations_done}; kept the frames so far in "
                   f"{len(writers)} run folders", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _generate_dallemini(prompt: str, config, out: Path, device: str, clip_model: str, mp4: bool, offline: bool,
                        quiet: bool) -> None:
    """The dallemini branch of ``generate``: checks, then min-dalle's files, then the run folder."""
    from .dallemini import DalleMiniEngine, check_dtype, import_min_dalle, prompt_text
    from .device import resolve_device
    from .outputs import RunWriter, check_output_root, make_run_dir, mp4_available

    prompt_text(prompt)
    import_min_dalle()   # not installed: one line saying how to get it
    target = resolve_device(device)
    check_dtype(config.dtype, target)
    check_output_root(out)
    if mp4 and not mp4_available():
        raise ClipdrawError("--mp4 needs imageio-ffmpeg: pip install 'clipdraw[mp4]' (or pip install imageio-ffmpeg)")
    engine = DalleMiniEngine.load(config, device=target, clip_model=clip_model, offline=offline)
    run_dir = make_run_dir(out, prompt, config.seed)
    writer = RunWriter(run_dir, prompt, asdict(config), {"models": engine.info, "device": str(engine.device)},
                       gif=config.progressive, mp4=mp4, engine="dallemini")
    click.echo(f"clipdraw: {prompt!r} seed {config.seed}, dalle-{config.variant} on {engine.device} -> {run_dir}",
               err=True)
    with writer.on_failure():
        result = engine.generate(prompt, config, on_frame=writer.add_frame, progress=not quiet)
        writer.finish(result)
    click.echo(f"{run_dir / 'final.png'}  ({len(result.images)} of {len(result.candidates)} image(s), "
               f"CLIP similarity {result.final_similarity:.4f}, {result.seconds_per_image:.2f} s/image)")
    if result.interrupted:
        click.echo(f"clipdraw: interrupted after {result.iterations_done} tokens; kept {len(result.images)} "
                   f"image(s) and {len(writer.frame_files)} frame(s) in {run_dir}", err=True)
        sys.exit(EXIT_INTERRUPTED)


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


def _fail(message: str, code: int, error: Optional[BaseException] = None) -> None:
    """End the process with one line on stderr and ``code``."""
    import contextlib
    import errno
    import os

    from .errors import release

    click.echo(f"clipdraw: error: {message}", err=True)
    if error is not None:
        release(error)
    if isinstance(error, OSError) and error.errno == errno.EPIPE:   # stdout's reader is gone: nothing to flush
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: run the CLI; every failure ends as one line on stderr and an exit
    code (``clipdraw.errors.describe_failure``): 2 for bad input, 1 for a failed write, lack
    of memory or an unexpected error, 130 for Ctrl-C. ``CLIPDRAW_DEBUG=1`` shows the traceback."""
    from .errors import debug_requested, describe_failure

    try:
        cli.main(args=argv, prog_name="clipdraw", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("clipdraw: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        _fail(e.format_message(), EXIT_USAGE)
    except Exception as e:
        if debug_requested():
            raise
        message, code = describe_failure(e, memory_hint=_memory_hint(argv))
        _fail(message, code, e)
    sys.exit(0)


@cli.group()
def toy() -> None:
    """The mini DALL-E world shipped with clipdraw: shapes data, tiny dVAE, CLIP and transformer."""


@toy.command("judge")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("caption")
def toy_judge(image: Path, caption: str) -> None:
    """Say whether IMAGE shows CAPTION, by the toy world's analytic judge (no learned model).

    Prints the verdict and what the judge sees; exits 0 when it accepts, 1 when it rejects.
    """
    from .toy.judge import check, describe_detections, detect, parse_caption

    try:
        spec = parse_caption(caption)
    except ValueError:
        raise ClipdrawError(f"the toy judge cannot read {caption!r}: it reads captions such as 'a red circle', "
                            "'two blue squares' or 'a red circle above a green square'") from None
    picture = _read_image(image)
    detections = detect(picture)
    seen = describe_detections(detections)
    if check(spec, detections):
        click.echo(f"accepted: {caption!r}; the judge sees {seen}")
        return
    click.echo(f"rejected: {caption!r}; the judge sees {seen}")
    sys.exit(1)


def _read_image(path: Path):
    """An image file as an RGB array, or one line saying why it cannot be read."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert("RGB"))
    except FileNotFoundError:
        raise ClipdrawError(f"no such image: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ClipdrawError(f"cannot read {path} as an image: {e}") from None


@toy.command("train")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the weights (default: $CLIPDRAW_TOY_WEIGHTS, else the package's own; "
                   "with --coco: ./coco-transformer).")
@click.option("--stages", default=",".join(TOY_STAGES), show_default=True,
              help="Which models to train (toy world only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply every stage's step count (0.01 for a smoke run).")
@click.option("--coco", type=click.Path(path_type=Path), default=None,
              help="Train the transformer on a real image-caption set: a COCO captions JSON file.")
@click.option("--images", type=click.Path(path_type=Path), default=None, help="With --coco: the folder of its images.")
@click.option("--filter", "keywords", default=None,
              help="With --coco: keep captions containing any of these comma-separated words (e.g. mountain,beach).")
@click.option("--encoder", default=None,
              help="With --coco: dVAE encoder name or encoder.pkl path  [default: openai-encoder].")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="With --coco: image side in pixels for the encoder, a multiple of 8  [default: 256].")
@click.option("--device", default=None, help="With --coco: auto, cpu or cuda  [default: auto].")
@click.option("--offline", is_flag=True, help="With --coco: never download the encoder; use a cached or given file.")
@click.option("--quiet", "-q", is_flag=True)
def toy_train(out: Optional[Path], stages: str, seed: int, scale: float, coco: Optional[Path],
              images: Optional[Path], keywords: Optional[str], encoder: Optional[str], size: Optional[int],
              device: Optional[str], offline: bool, quiet: bool) -> None:
    """Train the toy world from scratch on the CPU (deterministic by seed), or with --coco the
    mini transformer over the real dVAE's tokens of a COCO-format image-caption set."""
    if not scale > 0:
        raise ClipdrawError(f"--scale must be positive, got {scale}")
    if coco is not None:
        _train_coco(coco, images, keywords, encoder or "openai-encoder", size or 256, device or "auto", offline,
                    out or Path("coco-transformer"), seed, scale, quiet)
        return
    given = [flag for flag, value in (("--images", images), ("--filter", keywords), ("--encoder", encoder),
                                      ("--size", size), ("--device", device), ("--offline", offline or None))
             if value is not None]
    if given:
        raise ClipdrawError(f"{given[0]} is for training on a caption set: it needs --coco")
    names = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in names if s not in TOY_STAGES]
    if unknown or not names:
        raise ClipdrawError(f"unknown stage {unknown[0] if unknown else stages!r}: expected {', '.join(TOY_STAGES)}")
    from .outputs import check_output_root
    from .toy.models import weights_dir
    from .toy.train import SCALED_SETTINGS, TrainConfig, train_all

    target = out or weights_dir()
    check_output_root(target)
    base = TrainConfig(seed=seed)
    config = TrainConfig(seed=seed, **{k: max(1, round(getattr(base, k) * scale))
                                       for k in SCALED_SETTINGS})
    summary = train_all(config, out=target, stages=names, progress=not quiet)
    for stage, seconds in summary["seconds"].items():
        last = [entry for entry in summary["log"] if entry["stage"] == stage][-1]
        values = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("stage", "step"))
        click.echo(f"{stage}: {seconds:.0f} s; last logged: {values}")
    click.echo(f"weights in {target}")


def _train_coco(captions: Path, images: Optional[Path], keywords: Optional[str], encoder: str, size: int, device: str,
                offline: bool, out: Path, seed: int, scale: float, quiet: bool) -> None:
    """The --coco branch of ``toy train``: argument checks here, the work in clipdraw.toy.coco."""
    if images is None:
        raise ClipdrawError("--coco needs --images DIR, the folder holding the caption set's images")
    words = None
    if keywords is not None:
        words = [w.strip() for w in keywords.split(",") if w.strip()]
        if not words:
            raise ClipdrawError(f"--filter {keywords!r} names no word: expected e.g. mountain,beach")
    if size % 8:
        raise ClipdrawError(f"--size must be a multiple of 8 (the encoder downsamples 8x), got {size}")
    from .device import resolve_device
    from .outputs import check_output_root
    from .toy.coco import train_coco
    from .toy.train import TrainConfig

    target = resolve_device(device)
    check_output_root(out)
    base = TrainConfig(seed=seed)
    config = TrainConfig(seed=seed, gpt_steps=max(1, round(base.gpt_steps * scale)))
    summary = train_coco(captions, images, words, encoder, out=out, config=config, device=target,
                         progress=not quiet, size=size, offline=offline,
                         log_fn=None if quiet else (lambda message: click.echo(f"clipdraw: {message}", err=True)))
    last = summary["log"][-1]
    click.echo(f"transformer: {summary['captions']} captions, {summary['images']} images, "
               f"{summary['image_tokens']} tokens each; {sum(summary['seconds'].values()):.0f} s; "
               f"last logged loss {last['loss']:.4f}")
    click.echo(f"weights in {out}")
