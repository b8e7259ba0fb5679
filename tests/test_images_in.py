"""Images in and edits out (issue 18): reading images, the dVAE encoder, init images, image
prompts, prompt schedules and text-diff edits, in the toy world and on tiny real-format models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from test_reports import run_main as cli
from clipdraw.config import GenerationConfig, toy_config
from clipdraw.errors import ClipdrawError
from clipdraw.images import read_image
from clipdraw.optimize import generate
from clipdraw.prompts import parse_image_prompt, parse_schedule
from clipdraw.targets import build_targets, slerp
from clipdraw.toy.data import render
from clipdraw.toy.judge import satisfies
from clipdraw.toy.specs import scene_for


@pytest.fixture(scope="module")
def toy_models():
    from clipdraw.toy.world import load_toy_models

    return load_toy_models("cpu")


@pytest.fixture(scope="module")
def red_circle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenes") / "red-circle.png"
    Image.fromarray(render(scene_for("a red circle", 1))).save(path)
    return path


# --------------------------------------------------------------------------- reading images


def test_images_are_read_upright_and_cut_to_the_centre_square(tmp_path):
    """A wide image keeps its centre; a camera's EXIF orientation is applied before cutting."""
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = (255, 0, 0)                                   # a red centre third
    Image.fromarray(wide).save(tmp_path / "wide.png")
    square = read_image(tmp_path / "wide.png", 10)
    assert square.shape == (3, 10, 10) and square[0].mean() > 0.95 and square[1:].max() < 0.05

    tall = np.zeros((60, 20, 3), np.uint8)                          # stored on its side...
    tall[20:40] = (0, 0, 255)
    image = Image.fromarray(tall)
    exif = image.getexif()
    exif[0x0112] = 6                                                # ...and tagged "rotate 90° to view"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "rotated.jpg", 10)
    assert upright.shape == (3, 10, 10) and upright[2].mean() > 0.9   # once turned, the blue band is the centre


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.png", "init image .*missing.png does not exist"),
    (lambda p: (p / "notes.png").write_text("not a picture") and p / "notes.png", "not an image Pillow can read"),
    (lambda p: p, "is a folder"),
])
def test_unreadable_images_are_one_line_naming_their_role(tmp_path, make, message):
    with pytest.raises(ClipdrawError, match=message):
        read_image(make(tmp_path), 8, "init image")


# --------------------------------------------------------------------------- the encoder


def test_the_openai_encoder_is_a_named_download_and_refused_when_unknown():
    from clipdraw.weights import locate

    weight = locate("openai", "encoder")
    assert weight.url.endswith("/encoder.pkl") and weight.kind == "dVAE encoder"
    with pytest.raises(ClipdrawError, match="unknown dVAE encoder 'vqgan'"):
        locate("vqgan", "encoder")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_real_format_encoder_drives_an_init_image_run(tmp_path, tiny_files, legacy, red_circle):
    """encoder.pkl pickled whole (zip or legacy format) loads through the allow-list, and its
    tokens start a run on the real code path."""
    from clipdraw import load_models
    from clipdraw.models import load_encoder

    path = tmp_path / "encoder.pkl"
    torch.save(tiny_models.make_tiny_encoder(vocab_size=512), path, _use_new_zipfile_serialization=not legacy)
    models = load_models(str(tiny_files["clip"]), str(tiny_files["decoder"]), device="cpu")
    models.encoder, info = load_encoder(str(path), "cpu")
    assert info["vocab_size"] == 512
    result = generate(models, "a cat", GenerationConfig(init_image=str(red_circle), size=32, cutn=2, iters=1),
                      progress=False)
    assert [f.iteration for f in result.frames] == [0, 1]


def test_an_encoder_pickle_that_would_run_code_is_refused_in_one_line(tmp_path, tiny_files, red_circle, capsys):
    from test_unpickling import _RunsCode

    marker, encoder = tmp_path / "code-ran", tmp_path / "encoder.pkl"
    torch.save({"payload": _RunsCode(marker)}, encoder)
    code = cli("a cat", "--clip-model", tiny_files["clip"], "--decoder", tiny_files["decoder"], "--encoder", encoder,
               "--init-image", red_circle, "--size", 32, "--iters", 1, "--device", "cpu", "--out", tmp_path / "out", "-q")
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and "refusing to load" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- init images


def test_frame_zero_of_an_init_image_run_is_the_dvae_redraw(toy_models, red_circle):
    """--iters 1: frame 0 decodes the encoder's tokens exactly (straight-through), is close to
    the image in pixels, and the analytic judge still reads the scene."""
    result = generate(toy_models, "a red circle", toy_config(init_image=str(red_circle), iters=1), progress=False,
                      keep_images=True)
    first = result.frames[0]
    assert first.iteration == 0
    source = read_image(red_circle, 64)
    tokens = toy_models.encoder.tokens(source[None])
    one_hot = torch.nn.functional.one_hot(tokens, toy_models.decoder.vocab_size).permute(0, 3, 1, 2).float()
    redraw = toy_models.decoder.decode(one_hot * 10.0, relaxation="straight-through")[0]
    drawn = torch.from_numpy(np.asarray(first.image, np.float32) / 255).permute(2, 0, 1)
    assert (drawn - redraw).abs().max() <= 1 / 255 + 1e-6
    assert (drawn - source).abs().mean() < 0.05
    assert satisfies("a red circle", np.asarray(first.image))


def test_init_weight_keeps_a_run_near_its_init_image(toy_models, red_circle):
    source = read_image(red_circle, 64)
    def distance(weight):
        result = generate(toy_models, "a green triangle", toy_config(init_image=str(red_circle), init_weight=weight,
                                                                     init_scale=3.0, iters=30, seed=3), progress=False)
        last = torch.from_numpy(np.asarray(result.frames[-1].image, np.float32) / 255).permute(2, 0, 1)
        return (last - source).pow(2).mean().item()
    assert distance(20.0) < distance(0.0) / 2


# --------------------------------------------------------------------------- image prompts


def test_image_prompt_specs_take_an_optional_weight(tmp_path):
    assert parse_image_prompt("cat.png") == parse_image_prompt("cat.png:1")
    assert parse_image_prompt("c:/x/cat.png:-0.5").weight == -0.5
    odd = tmp_path / "shot:2"
    odd.write_bytes(b"")
    assert parse_image_prompt(str(odd)).path == str(odd)   # an existing file named ...:2 is taken whole


def test_an_image_prompt_alone_pulls_toward_its_image(toy_models, red_circle, tmp_path):
    """No text: the guide's similarity to the image's own embedding rises over the run."""
    result = generate(toy_models, "", toy_config(image_prompts=(str(red_circle),), iters=30, save_every=10),
                      progress=False)
    assert result.prompts == [] and result.frames[-1].similarity > result.frames[0].similarity + 0.1
    code = cli("--image-prompt", red_circle, "--model", "toy", "--iters", 2, "--out", tmp_path, "--seed", 5, "-q")
    assert code == 0 and (tmp_path / "image-prompt-5" / "final.png").exists()
    code = cli("--image-prompt", red_circle, "--model", "toy", "--iters", 2, "--out", tmp_path, "--seed", 7, "--batch", 2,
               "-q")   # a batch names its folders as single runs do
    assert code == 0 and all((tmp_path / f"image-prompt-{seed}" / "final.png").exists() for seed in (7, 8))


def test_targets_combine_text_and_images_and_push_with_negative_weights(toy_models, red_circle):
    from clipdraw.prompts import parse_prompts
    from clipdraw.targets import read_image_prompts

    clip = toy_models.clip
    images = read_image_prompts([f"{red_circle}:-0.5"], clip.input_resolution)
    targets = build_targets(clip, parse_prompts("a blue square"), images)
    assert targets.embeds.shape[0] == 2 and targets.weights.tolist() == [1.0, -0.5]
    assert targets.shown.shape[0] == 1   # only what is pulled toward is "shown"
    red = clip.encode_image(read_image(red_circle, clip.input_resolution)[None])
    views = red[:, None]                                      # one image, one view: the pushed-away picture
    far = torch.nn.functional.normalize(torch.randn_like(views), dim=-1)
    assert targets.loss(views, "cosine") > targets.loss(far, "cosine") - 1   # finite, and
    pushed = build_targets(clip, (), images)
    assert pushed.loss(views, "cosine").item() > pushed.loss(far, "cosine").item()   # the pushed image costs more


# --------------------------------------------------------------------------- schedules


def test_schedules_split_the_run_in_equal_parts_or_at_given_iterations():
    assert [s.start for s in parse_schedule("a red circle^a blue square^a green triangle", 300)] == [0, 100, 200]
    explicit = parse_schedule("0:a red circle^250:a blue square|blurry:-1", 300)
    assert [(s.start, s.text) for s in explicit] == [(0, "a red circle"), (250, "a blue square|blurry:-1")]
    assert [p.weight for p in explicit[1].prompts] == [1.0, -1.0]
    assert len(parse_schedule("a photo: 1984", 10)) == 1


@pytest.mark.parametrize("spec, message", [
    ("0:a^0:b", "must increase"), ("10:a^20:b", "first part must start at iteration 0"),
    ("0:a^b", "to every part"), ("0:a^900:b", "after the last iteration"), ("a^^b", "empty"),
])
def test_bad_schedules_are_refused(spec, message):
    with pytest.raises(ClipdrawError, match=message):
        parse_schedule(spec, 300)


def test_a_schedule_run_aims_at_each_prompt_in_turn(toy_models):
    """Frames record the prompt they were made for; the judge picks among the last prompt's frames."""
    result = generate(toy_models, "a red circle^a blue square", toy_config(iters=40, save_every=10), progress=False)
    # frame 0 (the toy world's blank canvas) and frames 10, 20: made for the first part
    assert [f.prompt for f in result.frames] == ["a red circle"] * 3 + ["a blue square"] * 2
    assert result.chosen_frame.prompt == "a blue square"


# --------------------------------------------------------------------------- edits


def test_slerp_goes_from_one_unit_vector_to_the_other():
    a, b = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    assert abs(slerp(a, b, 0.5).norm().item() - 1) < 1e-5


@pytest.mark.parametrize("method", ["direction", "slerp"])
def test_an_edit_records_its_similarities_at_every_frame(tmp_path, red_circle, method):
    code = cli("edit", red_circle, "--from", "a red circle", "--to", "a blue circle", "--method", method,
               "--model", "toy", "--iters", 20, "--save-every", 10, "--init-weight", 5, "--seed", 2, "--out", tmp_path,
               "-q")
    assert code == 0
    record = json.loads((tmp_path / "a-blue-circle-2" / "run.json").read_text())
    assert record["settings"]["edit_from"] == "a red circle" and record["settings"]["edit_method"] == method
    assert [f["iteration"] for f in record["frames"]] == [0, 10, 20]
    first = record["frames"][0]["scores"]
    assert set(first) == {"to", "from", "original"} and first["original"] > 0.95   # frame 0: the image's redraw
    assert first["from"] > first["to"]


@pytest.mark.parametrize("args, message", [
    (["edit", "{tmp}/missing.png", "--from", "a", "--to", "b", "--model", "toy"], "does not exist"),
    (["edit", "{img}", "--to", "b", "--model", "toy"], "Missing option '--from'"),
    (["edit", "{img}", "--from", " ", "--to", "b", "--model", "toy"], "--from is empty"),
    (["edit", "{img}", "--from", "a", "--to", "b^c", "--model", "toy"], "one plain caption|schedule"),
    (["0:a^0:b", "--model", "toy"], "must increase"),
    (["a cat", "--init-image", "{img}", "--engine", "dallemini"], "--init-image is not used by --engine dallemini"),
    (["a cat", "--init-weight", "1"], "give --init-image too"),   # (the toy world starts from its blank canvas)
    (["a cat", "--image-prompt", "{tmp}/none.png", "--model", "toy"], "image prompt .* does not exist"),
    (["--model", "toy"], "the prompt is empty"),
    (["a^b", "--engine", "transformer", "--model", "toy"], "schedules"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, red_circle, capsys, args, message):
    out = tmp_path / "out"
    code = cli(*[a.format(tmp=tmp_path, img=red_circle) for a in args], "--out", out, "-q")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())
