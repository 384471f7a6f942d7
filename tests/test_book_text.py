"""The book's text: it reads as a book, its cross-references are right, and what it quotes has a source.

- No chapter, page, package or benchmark file speaks of documents the reader does not have or of how the
  book was made (source notes, a lecture, the outline file, issue numbers, writing sessions).
- Every "chapter N" names a chapter that exists, and where a method is named with its chapter, the chapter
  is that method's.
- Every published figure shown is read from ``sslbook.references`` (none typed into markdown), and every
  entry there is shown by some chapter.
- Every author-year citation of a chapter has an entry in the bibliography page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
CHAPTER_NUMBERS = {int(p.name[:2]) for p in CHAPTERS}


def cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell of a notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]


def text_files() -> dict[str, str]:
    """Every file a reader or a user of the package sees, as text (a notebook: all its cells)."""
    out = {}
    for p in CHAPTERS:
        out[str(p.relative_to(ROOT))] = "\n".join(src for _, src in cells(p))
    for name in ("intro.md", "README.md", "bibliography.md"):
        if (ROOT / name).exists():
            out[name] = (ROOT / name).read_text(encoding="utf-8")
    for p in sorted((ROOT / "sslbook").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*")):
        if p.is_file() and p.suffix in (".py", ".md", ".sh"):
            out[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8")
    return out


def markdown(path: Path) -> str:
    return "\n".join(src for kind, src in cells(path) if kind == "markdown")


# ------------------------------------------------------------------ how the book was made
FORBIDDEN = {
    "source documents": r"\bseed (article|notes?|documents?|material)\b|\bseeds/",
    "a lecture": r"\blectures?\b",
    "the outline file": r"\bARC\.md\b|\bbook's outline\b",
    "an issue number": r"\bissues? ?#? ?\d+|\bthe issue\b",
    "a writing session": r"\bsessions?\b",
    "who wrote it": r"\b(wrote|writing) this (chapter|code|book|page)\b",
}


def making_of(text: str) -> list[str]:
    """The phrases of ``text`` that speak of the book's sources or its making."""
    found = []
    for what, pattern in FORBIDDEN.items():
        for m in re.finditer(pattern, text, flags=re.IGNORECASE):
            end = text.find("\n", m.end())
            line = text[text.rfind("\n", 0, m.start()) + 1 : end if end >= 0 else len(text)]
            found.append(f"{what}: {line.strip()[:160]}")
    return found


def test_the_check_catches_the_phrases_it_is_meant_to():
    for phrase in [
        "The seed article notes",
        "as in the lecture",
        "(from ARC.md)",
        "targets (issue 7)",
        "the session that wrote this chapter had no GPU",
        "the seed notes mention",
        "Issue 7's speed run",
    ]:
        assert making_of(phrase), phrase
    assert not making_of("Chen et al. 2020 compare the three mechanisms; the loss is InfoNCE.")


@pytest.mark.parametrize("name", sorted(text_files()))
def test_no_mention_of_the_books_making(name):
    found = making_of(text_files()[name])
    assert not found, f"{name}:\n" + "\n".join(found)


# ------------------------------------------------------------------ cross-references
REF = re.compile(r"\b(?:[Cc]hapters?|ch\.)\s+(\d+)((?:\s*(?:[–-]|,|and|or|to)\s*\d+)*)")


def chapter_refs(text: str) -> list[tuple[int, str]]:
    refs = []
    for m in REF.finditer(text):
        for n in [m.group(1), *re.findall(r"\d+", m.group(2))]:
            refs.append((int(n), m.group(0)))
    return refs


def test_chapter_refs_parses_lists_and_ranges():
    assert [n for n, _ in chapter_refs("chapters 2–5 and chapter 8, ch. 6, chapters 2 and 3")] == [2, 5, 8, 6, 2, 3]


@pytest.mark.parametrize("name", sorted(text_files()))
def test_every_chapter_reference_exists(name):
    bad = [ref for n, ref in chapter_refs(text_files()[name]) if n not in CHAPTER_NUMBERS]
    assert not bad, f"{name} refers to chapters that do not exist: {bad}"


# The chapter of each method, as the book's chapter files define it (chapter 11 lists them too).
METHOD_CHAPTER = {
    "RotNet": 2,
    "jigsaw": 2,
    "relative position": 2,
    "context encoder": 3,
    "split-brain": 3,
    "video colorization": 3,
    "MAE": 4,
    "SimCLR": 5,
    "InstDisc": 6,
    "PIRL": 6,
    "MoCo": 6,
    "AdCo": 6,
    "CPC": 7,
    "BYOL": 8,
    "SimSiam": 8,
    "Barlow Twins": 8,
    "DINO": 9,
    "MixMatch": 10,
    "S4L": 10,
    "BigBiGAN": 10,
    "AET": 10,
}


def method_refs(text: str) -> list[tuple[str, int, str]]:
    """(method, chapter, phrase) for "BYOL, chapter 8", "SimCLR (chapter 5)", "chapter 2's jigsaw"…"""
    out = []
    for name in METHOD_CHAPTER:
        n = re.escape(name)
        after = rf"\b{n}(?: v[123])?(?:'s)?(?: [A-Za-z-]+)?\s*[,(]\s*(?:as in |in |of |from |see )?(?:[Cc]hapter|ch\.) (\d+)"
        before = rf"\b[Cc]hapter (\d+)'s {n}\b"
        for pattern in (after, before):
            for m in re.finditer(pattern, text):
                out.append((name, int(m.group(1)), m.group(0)))
    return out


def test_method_refs_finds_the_forms_the_book_uses():
    found = method_refs("as in BYOL, chapter 7; SimCLR (chapter 5); chapter 2's jigsaw; MAE's idea (chapter 4)")
    assert sorted((m, c) for m, c, _ in found) == [("BYOL", 7), ("MAE", 4), ("SimCLR", 5), ("jigsaw", 2)]


@pytest.mark.parametrize("name", sorted(text_files()))
def test_methods_are_referred_to_their_own_chapter(name):
    wrong = [(m, c, phrase) for m, c, phrase in method_refs(text_files()[name]) if c != METHOD_CHAPTER[m]]
    assert not wrong, f"{name}: {wrong} (expected {[(m, METHOD_CHAPTER[m]) for m, _, _ in wrong]})"


def test_method_chapter_table_matches_the_chapters():
    by_number = {int(p.name[:2]): p for p in CHAPTERS}
    for method, n in METHOD_CHAPTER.items():
        first = cells(by_number[n])[0][1]
        intro = markdown(by_number[n])
        assert method.lower() in intro.lower(), (method, n)
        assert n in CHAPTER_NUMBERS and first.startswith(f"# {n}."), (method, n)
    # chapter 11's table of the book's methods agrees with the chapters' own numbering
    comparison = next(p for p in CHAPTERS if p.name.startswith("11_"))
    book = re.findall(r'\((\d+), "(\w+)", "', "\n".join(src for _, src in cells(comparison)))
    assert book, "chapter 11 no longer lists the book's methods as (chapter, method, family)"
    names = {
        "rotnet": "RotNet",
        "jigsaw": "jigsaw",
        "relative_position": "relative position",
        "context_encoder": "context encoder",
        "split_brain": "split-brain",
        "video_colorization": "video colorization",
        "mae": "MAE",
        "simclr": "SimCLR",
        "instdisc": "InstDisc",
        "pirl": "PIRL",
        "moco_v1": "MoCo",
        "moco_v2": "MoCo",
        "moco_v3": "MoCo",
        "adco": "AdCo",
        "cpc": "CPC",
        "byol": "BYOL",
        "simsiam": "SimSiam",
        "barlow_twins": "Barlow Twins",
        "dino": "DINO",
        "bigbigan": "BigBiGAN",
        "aet": "AET",
    }
    for n, method in book:
        assert METHOD_CHAPTER[names[method]] == int(n), (method, n)


# ------------------------------------------------------------------ published numbers
def test_every_reference_entry_is_shown_by_a_chapter():
    from sslbook import references

    code = "\n".join(src for p in CHAPTERS for kind, src in cells(p) if kind == "code")
    for name in ("ACCURACY", "PROTOCOL", "DATASET", "COST", "PAPER", "FIGURES", "quote", "source"):
        assert re.search(rf"\b{name}\b", code), f"no chapter reads sslbook.references.{name}"
    for key in references.FIGURES:
        assert f'"{key}"' in code, f"no chapter shows the published figure {key!r}"
    for bench in references.ACCURACY:
        assert bench in references.SOURCE and bench in references.PROTOCOL and bench in references.DATASET, bench
    for method in references.ACCURACY["ImageNet linear (papers)"]:
        assert method in references.PAPER, f"no paper given for the ImageNet figure of {method}"
    for c in references.COST:
        assert c.get("source"), c


def published_values() -> set[str]:
    from sslbook import references

    values = [v for table in references.ACCURACY.values() for v in table.values()]
    values += [f["value"] for f in references.FIGURES.values()]
    # the accuracies and scores: numbers with a decimal point, printed as the sources give them
    return {f"{v:.1f}" for v in values if isinstance(v, float) and v >= 10} | {
        f"{v}" for v in values if isinstance(v, float) and v >= 10
    }


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_published_number_typed_into_markdown(path):
    text = markdown(path)
    typed = sorted(v for v in published_values() if re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", text))
    assert not typed, (
        f"{path.name}: published numbers typed into markdown: {typed} (print them from sslbook.references)"
    )


# ------------------------------------------------------------------ the bibliography
CITATION = re.compile(
    r"((?:[A-ZÀ-Ž][\w'’-]+|van den|van der|da)(?:[ ,]+(?:&|and|et al\.|[A-ZÀ-Ž][\w'’-]+|van den|van der))*)"
    r"[ ,]*\(?((?:19|20)\d\d)\b"
)


def first_author(names: str) -> str | None:
    for word in re.findall(r"[\w'’-]+", names):
        if word[0].isupper() and not word.isupper() and word not in ("Figure", "Table", "Fig", "The", "In"):
            return word
    return None


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "bibliography.md").read_text(encoding="utf-8")
    entries = bib.split("\n- ")[1:]
    missing = set()
    for p in CHAPTERS:
        for m in CITATION.finditer(markdown(p)):
            author, year = first_author(m.group(1)), m.group(2)
            if author is None:
                continue
            if not any(author in e and year in e for e in entries):
                missing.add(f"{p.name}: {author} {year} ({m.group(0)!r})")
    assert not missing, "cited but not in bibliography.md:\n" + "\n".join(sorted(missing))


def test_the_bibliography_is_in_the_table_of_contents():
    assert re.search(r"^\s*- file: bibliography\s*$", (ROOT / "_toc.yml").read_text(), flags=re.MULTILINE)
