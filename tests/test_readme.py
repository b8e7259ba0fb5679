"""The README's layout names every module of the package, so that it cannot go stale unseen."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_entries() -> set:
    """The paths the README's Layout block names, rebuilt from its indentation."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Layout\s*```\n(.*?)```", text, re.S).group(1)
    stack, names = [], set()
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        stack = stack[:depth] + [name.rstrip("/")]
        names.add("/".join(stack))
    return names


def test_the_readme_layout_names_every_package_module():
    named = layout_entries()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "clipdraw").rglob("*.py")
               if p.name != "__init__.py" or p.parent == ROOT / "clipdraw"}   # a sub-package is named by its folder
    folders = {str(p.relative_to(ROOT)) for p in (ROOT / "clipdraw").rglob("*") if p.is_dir()
               and p.name != "__pycache__" and any(p.glob("*.py"))}
    assert sorted(modules - named) == [] and sorted(folders - named) == []
    stale = {n for n in named if n.startswith("clipdraw/") and n.endswith(".py")} - modules
    assert sorted(stale) == []   # nothing named that is gone
