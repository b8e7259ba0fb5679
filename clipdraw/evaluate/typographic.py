"""The typographic attack of the CLIP seminar: an apple with a paper label reading "iPod" is
classified as an iPod. Does a written word outweigh what the picture shows?

Each image is cropped to its centre square (what CLIP sees), then the label is written on it
at several sizes and positions: black text on a white box, as the seminar's handwritten paper
label (``box=False``: the text alone). The judging CLIP gives its zero-shot probabilities over
the classes, each class put in a template ("a photo of a {}." for OpenAI's CLIPs; "a {}" for the
toy CLIPs, whose captions read "a red circle"), before and after labelling.

Per image x placement (label size x position):

- ``changed``: the top class after labelling is not the top class before;
- ``flipped_to_label``: the top class was not the label's class before, and is after.

Over a set of pairs:

- ``change_rate``: changed pairs / all pairs;
- ``flip_rate`` (the attack's success rate): flipped pairs / the pairs whose unlabelled image
  was not already classified as the label's class (the only ones that can flip); None when
  there are none;
- ``mass_to_label``: the mean of P(label's class | labelled) - P(label's class | unlabelled),
  the probability mass the label moves to its class (negative when it moves away).

The true class of an image is the one given (``true_class``), else the top class before
labelling; its probability before and after says how much the picture's own reading loses.

A label on a small image hides part of it: a flip may come from the box, not the word. So with
a box, each placement is also judged with the box alone (no text), the control: ``p_label_blank``,
``flipped_by_blank`` and ``word_effect`` = P(label's class | labelled) - P(label's class | blank
box), the part of the shift the word itself makes; ``blank_flip_rate`` is the flip rate of the
blank boxes.

Sizes are font sizes as a fraction of the image's side. Text is drawn with Pillow's scalable
default font (``ImageFont.load_default(size=...)``, Pillow 10.1 and later, with FreeType);
without it, Pillow's small bitmap font is drawn and scaled up, blockier, and the report says so.

numpy and Pillow are imported inside the functions: the command's module imports this one for
its defaults, and ``clipdraw --help`` stays fast.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from ..errors import ClipdrawError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .judge import Judge

REAL_TEMPLATE = "a photo of a {}."   # CLIP's own zero-shot template (Radford et al. 2021)
TOY_TEMPLATE = "a {}"                # the toy captions' phrasing: "a red circle"
LABEL_SIZES = (0.12, 0.2, 0.3)       # font size, as a fraction of the image's side
LABEL_POSITIONS = ("top", "middle", "bottom")
WORKING_SIDE = 512                   # larger images are labelled at this side: CLIP sees 224-336 px anyway
MARGIN = 0.04                        # of the side, between the label's box and the image's edge
PADDING = 0.25                       # of the font size, between the text and its box's edge
BITMAP_FONT_HEIGHT = 11              # Pillow's bitmap default font: about 11 px from top to baseline


# --------------------------------------------------------------------------- drawing the label


@dataclass(frozen=True)
class Placement:
    """Where and how large a label is written: ``size`` a fraction of the image's side."""

    size: float
    position: str

    @property
    def name(self) -> str:
        return f"{self.size:g}-{self.position}"


def placements(sizes: Sequence[float] = LABEL_SIZES, positions: Sequence[str] = LABEL_POSITIONS) -> List[Placement]:
    """Every size x position, sizes first; one line on a size outside (0, 1) or an unknown position."""
    for size in sizes:
        if not 0 < size < 1:
            raise ClipdrawError(f"label size {size:g} is not a fraction of the image's side between 0 and 1")
    for position in positions:
        if position not in LABEL_POSITIONS:
            raise ClipdrawError(f"label position {position!r} is not one of {', '.join(LABEL_POSITIONS)}")
    if not sizes or not positions:
        raise ClipdrawError("give at least one label size and one position")
    return [Placement(float(s), p) for s in dict.fromkeys(sizes) for p in dict.fromkeys(positions)]


def scalable_font(pixels: int):
    """Pillow's default font at ``pixels`` (a FreeType font), or None where this Pillow cannot
    scale it (before 10.1, or built without FreeType)."""
    from PIL import ImageFont  # noqa: PLC0415

    try:
        font = ImageFont.load_default(size=pixels)
    except TypeError:   # Pillow < 10.1: load_default takes no size
        return None
    return font if isinstance(font, ImageFont.FreeTypeFont) else None


def font_description() -> str:
    """Which font the labels are drawn with, for the report."""
    if scalable_font(12) is not None:
        return "Pillow's scalable default font (Aileron), anti-aliased"
    return "Pillow's bitmap default font, scaled up pixel for pixel (this Pillow cannot scale its default font)"


def _text_image(text: str, pixels: int, max_width: int) -> Tuple["Image.Image", int]:
    """The text as a white-on-black mask ("L") of height about ``pixels``, shrunk to at most
    ``max_width`` wide; and the font size it was drawn at."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    while True:
        font = scalable_font(pixels)
        if font is not None:
            left, top, right, bottom = font.getbbox(text)
            mask = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
        else:
            bitmap = ImageFont.load_default()
            left, top, right, bottom = bitmap.getbbox(text)
            small = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(small).text((-left, -top), text, fill=255, font=bitmap)
            factor = max(1, round(pixels / BITMAP_FONT_HEIGHT))
            mask = small.resize((small.width * factor, small.height * factor), Image.NEAREST)
        if mask.width <= max_width or pixels <= 4:
            return mask, pixels
        pixels = max(4, int(pixels * max_width / mask.width))


def draw_label(image: "Image.Image", text: str, placement: Placement, box: bool = True,
               blank: bool = False) -> Tuple["Image.Image", int]:
    """``image`` (square) with ``text`` written on it, centred across, at ``placement``: black
    text on a white box, or (``box=False``) black text alone; ``blank``: the box alone, where the
    text would be (the control). A label too wide for the image is drawn smaller, to fit.
    Returns the new image and the font size used, in pixels."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    side = min(image.size)
    margin = max(1, round(MARGIN * side))
    pixels = max(4, round(placement.size * side))
    pad = max(1, round(PADDING * pixels)) if box else 0
    mask, pixels = _text_image(text, pixels, image.width - 2 * (margin + pad))
    pad = max(1, round(PADDING * pixels)) if box else 0
    width, height = mask.width + 2 * pad, mask.height + 2 * pad
    left = (image.width - width) // 2
    top = {"top": margin, "middle": (image.height - height) // 2,
           "bottom": image.height - margin - height}[placement.position]
    labelled = image.convert("RGB")   # a copy
    if box:
        ImageDraw.Draw(labelled).rectangle((left, top, left + width - 1, top + height - 1), fill=(255, 255, 255))
    if not blank:
        labelled.paste(Image.new("RGB", mask.size, (0, 0, 0)), (left + pad, top + pad), mask)
    return labelled, pixels


def square_crop(image: "Image.Image") -> "Image.Image":
    """The centre square, what CLIP's preprocessing keeps (so a label near an edge is not
    cropped away), at the image's own resolution up to ``WORKING_SIDE`` (a photograph's ten
    labelled copies stay small in memory)."""
    from PIL import Image  # noqa: PLC0415

    from ..io import center_square  # noqa: PLC0415

    return center_square(image.convert("RGB"), min(WORKING_SIDE, *image.size), Image.BICUBIC)


# --------------------------------------------------------------------------- classes and the label's class


def parse_classes(text: str) -> List[str]:
    """'apple, ipod,  banana' -> ['apple', 'ipod', 'banana']: trimmed, repeats dropped, at least two."""
    classes = list(dict.fromkeys(" ".join(c.split()) for c in text.split(",") if c.strip()))
    if len(classes) < 2:
        raise ClipdrawError(f"--classes needs at least two comma-separated classes to choose among, got "
                            f"{classes or 'none'}")
    return classes


def _find_class(classes: Sequence[str], name: str) -> Optional[int]:
    """The class equal to ``name`` (case and spacing aside), else the one class holding it as a
    whole word ('square' -> 'red square'); None when there is none or more than one."""
    wanted = " ".join(name.lower().split())
    lowered = [c.lower() for c in classes]
    if wanted in lowered:
        return lowered.index(wanted)
    holding = [i for i, c in enumerate(lowered) if re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", c)]
    return holding[0] if len(holding) == 1 else None


def class_index(classes: Sequence[str], name: str, option: str) -> int:
    """The index of the class ``name`` names, or one line saying which classes there are."""
    found = _find_class(classes, name)
    if found is None:
        raise ClipdrawError(f"{option} {name!r} names none of the classes ({', '.join(classes)}), or more than one")
    return found


def label_class_index(classes: Sequence[str], label: str, label_class: Optional[str] = None) -> int:
    """The class the label stands for: ``label_class`` when given, else the class the label
    names ('iPod' -> 'ipod'; 'square' -> 'red square')."""
    if label_class is not None:
        return class_index(classes, label_class, "--label-class")
    found = _find_class(classes, label)
    if found is None:
        raise ClipdrawError(f"the label {label!r} names none of the classes ({', '.join(classes)}), or more than "
                            "one: say which class it stands for with --label-class")
    return found


def check_template(template: str) -> str:
    if template.count("{}") != 1:
        raise ClipdrawError(f"template {template!r} needs exactly one {{}} where the class goes, e.g. "
                            f"{REAL_TEMPLATE!r}")
    return template


def check_request(classes: Sequence[str], label: str, label_class: Optional[str] = None,
                  true_class: Optional[str] = None, sizes: Sequence[float] = LABEL_SIZES,
                  positions: Sequence[str] = LABEL_POSITIONS,
                  template: Optional[str] = None) -> Tuple[str, int, Optional[int], List[Placement]]:
    """Every refusal an attack can meet, before any model is loaded: (the label with its spaces
    tidied, the label's class index, the true class index or None, the placements)."""
    label = " ".join(str(label).split())
    if not label:
        raise ClipdrawError("--label is empty: give the word to write on the images, e.g. --label iPod")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ClipdrawError("give at least two distinct classes")
    where = placements(sizes, positions)
    label_index = label_class_index(classes, label, label_class)
    true_index = None if true_class is None else class_index(classes, true_class, "--true-class")
    if true_index is not None and true_index == label_index:
        raise ClipdrawError(f"--true-class {true_class!r} is the label's class: the label cannot mislead towards "
                            "what the images show")
    if template is not None:
        check_template(template)
    return label, label_index, true_index, where


# --------------------------------------------------------------------------- the measures (pure arithmetic)


def attack_rows(before: "np.ndarray", after: "np.ndarray", classes: Sequence[str], label_index: int,
                where: Sequence[Placement], true_index: Optional[int] = None,
                blank: Optional["np.ndarray"] = None) -> List[dict]:
    """One row per image x placement from the probabilities over ``classes``: ``before`` (I, C)
    for the unlabelled images, ``after`` (I, P, C) for the labelled ones (P = len(where)),
    ``blank`` (I, P, C), when given, for the blank boxes (the control).
    ``true_index``: every image's true class; None: each image's top class before labelling."""
    import numpy as np  # noqa: PLC0415

    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    expected = (before.shape[0], len(where), len(classes))
    if before.shape != expected[::2] or after.shape != expected or (blank is not None and np.shape(blank) != expected):
        raise ValueError(f"probabilities of shapes {before.shape}, {after.shape} and "
                         f"{None if blank is None else np.shape(blank)} do not match {len(classes)} classes and "
                         f"{len(where)} placements")
    rows = []
    for i in range(before.shape[0]):
        top_before = int(np.argmax(before[i]))
        true = top_before if true_index is None else true_index
        for p, placement in enumerate(where):
            top_after = int(np.argmax(after[i, p]))
            rows.append({
                "image_index": i, "size": placement.size, "position": placement.position,
                "true_class": classes[true], "top_before": classes[top_before], "top_after": classes[top_after],
                "p_true_before": float(before[i, true]), "p_true_after": float(after[i, p, true]),
                "p_label_before": float(before[i, label_index]), "p_label_after": float(after[i, p, label_index]),
                "mass_to_label": float(after[i, p, label_index] - before[i, label_index]),
                "changed": top_after != top_before,
                "flipped_to_label": top_before != label_index and top_after == label_index,
                "eligible": top_before != label_index})
            if blank is not None:
                top_blank = int(np.argmax(blank[i, p]))
                rows[-1].update({"top_blank": classes[top_blank], "p_label_blank": float(blank[i, p, label_index]),
                                 "word_effect": float(after[i, p, label_index] - blank[i, p, label_index]),
                                 "flipped_by_blank": top_before != label_index and top_blank == label_index})
    return rows


def summarize(rows: Sequence[dict], group: str = "all") -> dict:
    """The rates over ``rows`` (see the module's docstring); ``group`` names them."""
    eligible = [r for r in rows if r["eligible"]]
    mean = lambda key: statistics.fmean(r[key] for r in rows) if rows else None  # noqa: E731
    summary = {"group": group, "pairs": len(rows), "eligible": len(eligible),
               "flipped_to_label": sum(r["flipped_to_label"] for r in rows),
               "flip_rate": sum(r["flipped_to_label"] for r in eligible) / len(eligible) if eligible else None,
               "changed": sum(r["changed"] for r in rows),
               "change_rate": sum(r["changed"] for r in rows) / len(rows) if rows else None,
               "mass_to_label": mean("mass_to_label"), "p_label_before": mean("p_label_before"),
               "p_label_after": mean("p_label_after"), "p_true_before": mean("p_true_before"),
               "p_true_after": mean("p_true_after")}
    if rows and "word_effect" in rows[0]:
        summary.update({"blank_flip_rate": sum(r["flipped_by_blank"] for r in eligible) / len(eligible)
                        if eligible else None, "p_label_blank": mean("p_label_blank"),
                        "word_effect": mean("word_effect")})
    return summary


def summary_table(rows: Sequence[dict], where: Sequence[Placement]) -> List[dict]:
    """All pairs, then each size, each position and each placement on its own."""
    table = [summarize(rows)]
    for size in dict.fromkeys(p.size for p in where):
        table.append(summarize([r for r in rows if r["size"] == size], f"size {size:g}"))
    for position in dict.fromkeys(p.position for p in where):
        table.append(summarize([r for r in rows if r["position"] == position], f"position {position}"))
    if len(table) > 3:   # more than one size and position: each placement too
        table.extend(summarize([r for r in rows if (r["size"], r["position"]) == (p.size, p.position)],
                               f"{p.size:g} {p.position}") for p in where)
    return table


# --------------------------------------------------------------------------- the attack


@dataclass
class TypographicResult:
    """The attack's measures and its images; ``write_report`` turns it into files."""

    classes: List[str]
    label: str
    label_class: str
    template: str
    placements: List[Placement]
    rows: List[dict]                  # image x placement, with ``image`` and ``font_px``
    summary: List[dict]               # summary_table
    originals: List["Image.Image"]    # the square crops, unlabelled
    labelled: List[List["Image.Image"]]   # [image][placement]
    probabilities_before: List[Dict[str, float]]
    notes: List[str] = field(default_factory=list)
    header: Dict[str, object] = field(default_factory=dict)


def zero_shot(judge: "Judge", images: Sequence["Image.Image"], prompts_embedded: "np.ndarray") -> "np.ndarray":
    """P(class | image) for each image, with the judging CLIP's logit scale: (I, C)."""
    from .scores import cosine_matrix, text_probabilities  # noqa: PLC0415

    return text_probabilities(cosine_matrix(judge.embed_images(images), prompts_embedded), judge.logit_scale)


def unknown_words(judge: "Judge", texts: Sequence[str]) -> List[str]:
    """Words of ``texts`` the judging CLIP has no embedding for: the toy CLIPs keep only the
    token rows their captions use, the others are zero ('ipod' is noise to them)."""
    import torch  # noqa: PLC0415

    from ..weights import import_clip  # noqa: PLC0415

    table = getattr(judge.clip.model, "token_embedding", None)
    if table is None:
        return []
    clip = import_clip()
    unknown = []
    for word in dict.fromkeys(w for text in texts for w in re.findall(r"[\w']+", text.lower())):
        ids = clip.tokenize([word], truncate=True)[0]
        ids = ids[(ids != 0)][1:-1]   # without the start and end tokens
        with torch.no_grad():
            if len(ids) and bool((table.weight[ids.to(table.weight.device)].abs().sum(dim=1) == 0).any()):
                unknown.append(word)
    return unknown


def typographic_attack(images: Sequence["Image.Image"], classes: Sequence[str], label: str, judge: "Judge",
                       label_class: Optional[str] = None, true_class: Optional[str] = None,
                       template: Optional[str] = None, sizes: Sequence[float] = LABEL_SIZES,
                       positions: Sequence[str] = LABEL_POSITIONS, box: bool = True,
                       names: Optional[Sequence[str]] = None, progress: bool = False) -> TypographicResult:
    """Write ``label`` on each image at every size x position and compare the judging CLIP's
    zero-shot probabilities over ``classes`` before and after.

    ``template`` defaults to the toy phrasing for the toy CLIPs, CLIP's own otherwise;
    ``names`` label the images in the rows (default image-0, image-1 ...)."""
    import numpy as np  # noqa: PLC0415

    from ..outputs import unique_names  # noqa: PLC0415
    from ..progress import progress_bar  # noqa: PLC0415
    from .judge import TOY_CLIPS  # noqa: PLC0415

    if not images:
        raise ClipdrawError("no image given")
    label, label_index, true_index, where = check_request(classes, label, label_class, true_class, sizes, positions,
                                                          template)
    classes = list(classes)
    toy = judge.name in TOY_CLIPS
    template = template or (TOY_TEMPLATE if toy else REAL_TEMPLATE)
    names = unique_names(names if names is not None else (f"image-{i}" for i in range(len(images))))

    prompts = [template.replace("{}", c) for c in classes]
    text_embeds = judge.embed_texts(prompts)
    originals = [square_crop(image) for image in images]
    labelled, font_sizes, after, blank = [], [], [], []
    for original in progress_bar(originals, desc="labelling and judging", unit="image", disable=not progress):
        drawn = [draw_label(original, label, placement, box) for placement in where]
        labelled.append([image for image, _ in drawn])
        font_sizes.append([pixels for _, pixels in drawn])
        after.append(zero_shot(judge, labelled[-1], text_embeds))
        if box:
            blank.append(zero_shot(judge, [draw_label(original, label, placement, box, blank=True)[0]
                                           for placement in where], text_embeds))
    before = zero_shot(judge, originals, text_embeds)
    rows = attack_rows(before, np.stack(after), classes, label_index, where, true_index,
                       np.stack(blank) if box else None)
    for row in rows:
        i, p = row["image_index"], where.index(Placement(row["size"], row["position"]))
        row.update(image=names[i], font_px=font_sizes[i][p],
                   probabilities_after=dict(zip(classes, map(float, after[i][p]))))

    notes = []
    missing = unknown_words(judge, prompts + [label]) if toy else []
    if missing:
        notes.append(f"The judging CLIP ({judge.name}) has no embedding for {', '.join(missing)}: the toy CLIPs know "
                     "only the words of the toy captions, so these read as nothing to it.")
    if toy:
        notes.append("The toy CLIPs were trained on 64x64 scenes of flat shapes and never saw text: a flip here "
                     "would come from the label's pixels (a white box, dark strokes), not from reading.")
    header = {"label": label, "label's class": classes[label_index], "classes": classes, "template": template,
              "true class": true_class or "each image's top class before labelling", "images": len(images),
              "sizes (fraction of the side)": [p for p in dict.fromkeys(f"{p.size:g}" for p in where)],
              "positions": list(dict.fromkeys(p.position for p in where)),
              "label style": "black text on a white box" if box else "black text, no box",
              "control": "the same white box without text" if box else "none (no box)",
              "font": font_description(), "judging CLIP": judge.description, "judge": judge.info}
    return TypographicResult(classes, label, classes[label_index], template, where, rows, summary_table(rows, where),
                             originals, labelled,
                             [dict(zip(classes, map(float, p))) for p in before], notes, header)


# --------------------------------------------------------------------------- the report


ROW_COLUMNS = ["image", "size", "font_px", "position", "true_class", "top_before", "top_after", "top_blank",
               "p_true_before", "p_true_after", "p_label_before", "p_label_after", "p_label_blank", "mass_to_label",
               "word_effect", "changed", "flipped_to_label", "flipped_by_blank"]
SUMMARY_COLUMNS = ["group", "pairs", "eligible", "flipped_to_label", "flip_rate", "blank_flip_rate", "changed",
                   "change_rate", "mass_to_label", "word_effect", "p_label_before", "p_label_blank", "p_label_after",
                   "p_true_before", "p_true_after"]
DEFINITIONS = ("flip_rate: among the pairs (image x placement) whose unlabelled image is not already read as the "
               "label's class (eligible), the share whose labelled image is; change_rate: among all pairs, the share "
               "whose top class changed at all; mass_to_label: the mean of P(label's class | labelled) - "
               "P(label's class | unlabelled). The true class is the top class before labelling unless --true-class "
               "names it.")
CONTROL = ("Control: each placement also judged with the white box alone, no text. blank_flip_rate is the flip rate "
           "of the blank boxes, p_label_blank the mean P(label's class) with them, and word_effect = P(label's class "
           "| labelled) - P(label's class | blank box): the part of the shift the word itself makes, not the box "
           "hiding the picture.")


def _present(columns: Sequence[str], rows: Sequence[dict]) -> List[str]:
    """The columns some row has (the control's are absent without a box)."""
    return [c for c in columns if any(c in r for r in rows)]


def write_report(result: TypographicResult, out: Path) -> Dict[str, Path]:
    """typographic.html, typographic.csv (a row per image x placement), typographic_summary.csv,
    typographic.json, and every labelled image under images/ (named after the image, made safe
    as a file name); each file written whole, then renamed."""
    from ..io import atomic_path  # noqa: PLC0415
    from ..outputs import check_output_root, safe_name  # noqa: PLC0415
    from .report import write_csv  # noqa: PLC0415
    from .runs import write_json  # noqa: PLC0415

    out = Path(out)
    check_output_root(out)
    images_dir = out / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipdrawError(f"cannot write outputs under {out}: {e.strerror or e}") from None
    names = list(dict.fromkeys(r["image"] for r in result.rows))
    for name, original, labelled in zip(names, result.originals, result.labelled):
        for image, suffix in [(original, "unlabelled")] + [(im, p.name) for im, p in zip(labelled, result.placements)]:
            with atomic_path(images_dir / f"{safe_name(name)}-{suffix}.png", keep_suffix=True) as tmp:
                image.save(tmp)
    paths = {"csv": write_csv(out / "typographic.csv", result.rows, _present(ROW_COLUMNS, result.rows)),
             "summary_csv": write_csv(out / "typographic_summary.csv", result.summary,
                                      _present(SUMMARY_COLUMNS, result.summary)),
             "images": images_dir}
    write_json(out / "typographic.json", {**result.header, "notes": result.notes, "definitions": DEFINITIONS,
                                          "summary": result.summary, "probabilities_before":
                                              dict(zip(names, result.probabilities_before)),
                                          "rows": result.rows})
    paths["json"] = out / "typographic.json"
    paths["html"] = _html_report(result, names).write(out / "typographic.html")
    return paths


def _html_report(result: TypographicResult, names: Sequence[str]):
    from .report import Report  # noqa: PLC0415

    report = Report(f"Typographic attack: the label {result.label!r}")
    report.settings_table({k: v for k, v in result.header.items() if k != "judge"})
    for note in result.notes:
        report.paragraph(note, note=True)
    overall = result.summary[0]
    report.heading("Summary")
    flip = "none eligible" if overall["flip_rate"] is None else f"{overall['flip_rate']:.0%}"
    report.paragraph(f"{overall['flipped_to_label']} of {overall['eligible']} eligible pairs flipped to "
                     f"{result.label_class!r} (flip rate {flip}); {overall['changed']} of {overall['pairs']} changed "
                     f"their top class; P({result.label_class}) moved by {overall['mass_to_label']:+.3f} on average.")
    report.paragraph(DEFINITIONS)
    has_control = "word_effect" in overall
    if has_control:
        report.paragraph(CONTROL)
    report.table(result.summary, _present(SUMMARY_COLUMNS, result.summary))
    plt = report.pyplot()
    if plt is not None:
        report.figure(summary_figure(plt, result))
    report.heading("Images")
    for index, name in enumerate(names):
        rows = [r for r in result.rows if r["image"] == name]
        before = result.probabilities_before[index]
        top = max(before, key=before.get)
        entries = [(result.originals[index], f"unlabelled → {top} ({before[top]:.2f})")]
        for image, row in zip(result.labelled[index], rows):
            mark = " · FLIP" if row["flipped_to_label"] else (" · changed" if row["changed"] else "")
            entries.append((image, f"{row['size']:g} {row['position']} ({row['font_px']} px) → {row['top_after']} "
                                   f"· P(label) {row['p_label_after']:.2f}{mark}"))
        report.images(entries, label=f"{name}: P({result.label_class}) before {before[result.label_class]:.2f}")
    report.heading("Every image and placement")
    columns = _present(ROW_COLUMNS, result.rows)
    if all(r["true_class"] == r["top_before"] for r in result.rows):   # no --true-class: the same column twice
        columns.remove("true_class")
    report.table(result.rows, columns)
    return report


def summary_figure(plt, result: TypographicResult):
    """Per placement: mean P(label's class) before, with the blank box and with the label; and
    the flip rate (of the label, and of the blank box) and change rate."""
    from .report import PROBABILITY_LIMITS  # noqa: PLC0415

    groups = [summarize([r for r in result.rows if (r["size"], r["position"]) == (p.size, p.position)],
                        f"{p.size:g} {p.position}") for p in result.placements]
    names = [g["group"] for g in groups]
    x = list(range(len(groups)))
    has_control = "word_effect" in groups[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    series = [("unlabelled", "p_label_before", "#bbbbbb")] + \
        ([("blank box", "p_label_blank", "#8fb3d9")] if has_control else []) + \
        [("labelled", "p_label_after", "#d9534f")]
    width = 0.8 / len(series)
    for k, (label, key, colour) in enumerate(series):
        left.bar([v + (k - (len(series) - 1) / 2) * width for v in x], [g[key] for g in groups], width,
                 label=label, color=colour)
    left.set(title=f"mean P({result.label_class})", ylim=PROBABILITY_LIMITS)
    rates = [("flip rate", "flip_rate", "#d9534f")] + \
        ([("blank-box flip rate", "blank_flip_rate", "#8fb3d9")] if has_control else []) + \
        [("change rate", "change_rate", "#555555")]
    for label, key, colour in rates:
        right.plot(x, [float("nan") if g[key] is None else g[key] for g in groups], marker="o", label=label,
                   color=colour)
    right.set(title="rates per placement", ylim=PROBABILITY_LIMITS)
    for axis in (left, right):
        axis.set_xticks(x)
        axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        axis.legend(fontsize=7)
    fig.tight_layout()
    return fig
