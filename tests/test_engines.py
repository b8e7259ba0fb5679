"""Every engine against the one interface (``clipdraw.engines.Engine``), every result through the
one writer (``RunWriter``), and every engine refusing the options that are not its own."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, fields

import pytest
from PIL import Image

from clipdraw.config import ENGINE_NAMES, ENGINE_SETTINGS, NOT_OPTIONS, TOY_DEFAULTS, GenerationConfig, engine_options
from clipdraw.engines import Engine, ModelSource, engine_class, load_engine
from clipdraw.outputs import RunWriter
from clipdraw.results import Frame, Result

from test_dallemini import cheap_vqgan, dallemini_root  # noqa: F401  (fixture)

HAVE_MIN_DALLE = importlib.util.find_spec("min_dalle") is not None


def build(name: str, tiny_files, tmp_path, monkeypatch, request) -> Engine:
    """Engine ``name`` on tiny models, through ``load_engine`` as the CLI and experiments build it."""
    if name == "optimize":
        source = ModelSource(clip_model=str(tiny_files["clip"]), decoder=str(tiny_files["decoder"]), device="cpu")
        return load_engine(name, source, iters=3, size=32, cutn=2, save_every=2)
    if name == "transformer":
        return load_engine(name, ModelSource(model="toy", device="cpu"), save_every=32)
    if not HAVE_MIN_DALLE:
        pytest.skip('min-dalle is not installed: pip install -e ".[dallemini]"')
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "min-dalle").symlink_to(request.getfixturevalue("dallemini_root") / "min-dalle")
    monkeypatch.setenv("CLIPDRAW_CACHE", str(cache))   # min-dalle's tiny files, found as a download would be
    from clipdraw.engines.dallemini import DalleMiniEngine

    load = DalleMiniEngine.from_files.__func__
    monkeypatch.setattr(DalleMiniEngine, "from_files", classmethod(lambda cls, *a, **k: cheap_vqgan(load(cls, *a, **k))))
    source = ModelSource(clip_model=str(tiny_files["clip"]), device="cpu", offline=True)
    return load_engine(name, source, progressive=True)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_keeps_the_interface_and_its_result_writes_a_run_folder(name, tiny_files, tmp_path, monkeypatch,
                                                                           request):
    engine = build(name, tiny_files, tmp_path, monkeypatch, request)
    assert isinstance(engine, Engine) and engine.name == name and isinstance(engine.settings, ENGINE_SETTINGS[name])
    assert engine.settings_at(7).seed == 7 and engine.settings.seed == 0   # a run's settings, the engine's untouched
    seen = []
    result = engine.generate("a red circle", 5, on_frame=seen.append, progress=False)
    assert isinstance(result, Result) and type(result) is not Result   # each engine its own result type
    assert result.config.seed == 5 and result.prompt == "a red circle"
    assert seen and [f.iteration for f in seen] == [f.iteration for f in result.frames]
    assert all(isinstance(f, Frame) for f in seen) and isinstance(result.image, Image.Image)
    assert result.iterations_done == result.frames[-1].iteration and result.seconds > 0
    described = engine.describe()
    assert set(described) == {"models", "device"} and described["device"] == "cpu"
    assert engine.summary_line(result).startswith(f"{engine.step_unit} ") or name == "dallemini"

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    writer = RunWriter(run_dir, "a red circle", asdict(result.config), described, gif=True, engine=name)
    for frame in seen:
        writer.add_frame(frame)
    writer.finish(result)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["engine"] == name and record["seed"] == 5 and record["settings"] == json.loads(
        json.dumps(asdict(result.config), default=str))
    assert record["final"]["iteration"] == result.chosen_frame.iteration
    assert [f["iteration"] for f in record["frames"]] == [f.iteration for f in seen]
    assert (run_dir / "final.png").is_file() and (run_dir / "progress.gif").is_file()
    kept = result.kept_images()
    assert [p.name for p in sorted(run_dir.glob("image_*.png"))] == [f"image_{i:02d}.png" for i in range(1, len(kept) + 1)]
    assert ("losses" in record) == (name == "optimize")   # the optimizer's curves, no one else's


def test_options_are_the_settings_fields_and_every_field_has_an_option():
    from clipdraw.cli import SOURCE_FIELDS, generate

    params = {p.name for p in generate.params}
    source_fields = {f.name for f in fields(ModelSource) if not f.name.startswith("_")}
    for name in ENGINE_NAMES:
        own = {f.name for f in fields(ENGINE_SETTINGS[name])}
        assert set(engine_options(name)) <= params, name   # every option the engine takes exists
        assert set(engine_options(name)) <= own | (set(SOURCE_FIELDS) & source_fields), name
        assert own - set(NOT_OPTIONS) <= set(engine_options(name)), name
        assert engine_class(name).options == engine_options(name)
    assert {"seed", "init_std", "progressive"} < set(NOT_OPTIONS)
    from clipdraw.cli import edit
    edit_params = {p.name for p in edit.params}   # the edit fields are set by `clipdraw edit`
    assert {"source_text", "target_text", "method", "strength"} <= edit_params


FOREIGN = [(engine, option) for engine in ENGINE_NAMES
           for option in sorted({o for other in ENGINE_NAMES for o in engine_options(other)} - set(engine_options(engine)))]
VALUES = {"augmentations": "none", "lr_schedule": "cosine", "relaxation": "gumbel", "loss": "spherical",
          "dtype": "float32", "rerank": "2:1", "transformer": ".", "judge_model": "none", "clip_model": "RN50",
          "decoder": "openai", "ema": "0.5", "cut_min_scale": "0.5", "cut_pow": "0.5", "pick_from": "0.5"}
FLAGS = {"compile": "--compile", "low_memory": "--low-memory", "mega": "--mega"}


@pytest.mark.parametrize("engine,option", FOREIGN, ids=[f"{e}-{o}" for e, o in FOREIGN])
def test_an_option_of_another_engine_is_refused_in_one_line(engine, option, tmp_path, capsys):
    from clipdraw.cli import generate, main

    flag = next(p.opts[0] for p in generate.params if p.name == option)
    args = [FLAGS[option]] if option in FLAGS else [flag, VALUES.get(option, "2")]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["a cat", "--engine", engine, "--model", "toy", *args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert f"{flag} is not used by --engine {engine}" in err[0]
    assert not out.exists()


def test_generate_help_lists_the_options_by_engine(capsys):
    from clipdraw.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    positions = [text.index(title) for title in ("Options for every engine:", "--engine optimize:",
                                                 "--engine transformer:", "--engine dallemini:")]
    assert positions == sorted(positions)
    dallemini = text[positions[3]:]
    assert "--mega" in dallemini and "--cutn" not in dallemini and "[default: 1]" in dallemini
    optimize = " ".join(text[positions[1]:positions[2]].split())   # the help's line breaks undone
    cutn = optimize[optimize.index("--cutn"):optimize.index("--cut-min-scale")]
    assert f"[default: {GenerationConfig().cutn}; toy: {TOY_DEFAULTS['cutn']}]" in cutn   # read from the config


@pytest.mark.parametrize("args,refused", [
    (["probe", "{list}", "--engine", "transformer", "--mega"], "--mega is not used by --engine transformer"),
    (["probe", "{list}", "--engine", "dallemini", "--cutn", "3"], "--cutn is not used by --engine dallemini"),
    (["compare", "{list}", "--engines", "optimize,transformer", "--mega"],
     "--mega is not used by --engine optimize, transformer: it is for --engine dallemini"),
    (["compare", "{list}", "--engines", "dallemini", "--iters", "5"], "--iters is not used by --engine dallemini"),
])
def test_probe_and_compare_refuse_options_none_of_their_engines_use(args, refused, tmp_path, capsys):
    from clipdraw.cli import main

    names = tmp_path / "list.txt"
    names.write_text("a red circle\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([a.format(list=names) for a in args] + ["--model", "toy", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and refused in err[0], err
    assert not out.exists()
