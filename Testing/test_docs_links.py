"""Every relative link in the repository's Markdown (README, docs/, bench/, the model card) reaches a file that exists,
and every ``#anchor`` names a heading of that file, slugged as GitHub slugs headings. Moving a results section from
one file to another must move its links too."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKDOWN = sorted(
    p for p in REPO.rglob("*.md")
    if not ({".git", "build", "node_modules", ".venv", "venv"} & set(p.relative_to(REPO).parts))
    and "vendor" not in p.relative_to(REPO).parts
)
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links in code are examples, not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: inline code marks and links dropped to their text, lower case, every character but
    letters, digits, '_', '-' and spaces removed, each space turned into '-' (so ' — ' becomes '--')."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, with GitHub's -1, -2 suffixes for repeated ones."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_slug_follows_github():
    # Headings whose anchors GitHub shows (bench/RESULTS.md's index was written from them).
    assert github_slug("Precision on this CPU: bf16 is emulated, fp32 stays — 2026-12-04") == (
        "precision-on-this-cpu-bf16-is-emulated-fp32-stays--2026-12-04")
    assert github_slug("Few labels on LA: 8 labeled (10 %), DTC — 2026-12-04") == (
        "few-labels-on-la-8-labeled-10--dtc--2026-12-04")
    assert github_slug("The `dtc info` command's output") == "the-dtc-info-commands-output"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    md = tmp_path / "a.md"
    md.write_text("# Results\n\n## Seed 2\n\n```\n## not a heading\n```\n\n## Seed 2\n", encoding="utf-8")
    assert anchors(md) == {"results", "seed-2", "seed-2-1"}


@pytest.mark.parametrize("md", MARKDOWN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_reaches_its_file_and_heading(md):
    broken = []
    for line in prose_lines(md.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not checked here
                continue
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / unquote(path_part)).resolve() if path_part else md
            if not dest.exists():
                broken.append(f"{target}: no file {path_part}")
            elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
                broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert broken == []
