"""Generated blocks of Markdown pages: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` is written by code from committed files, never typed, so it cannot go
stale. One mechanism for every such block: the catalogue (``papers``), the README's Table 4
headline (``table4``) and the numbers of docs/results.md (``results:*``).
"""

from __future__ import annotations

from pathlib import Path

from kdlab.io import write_text


def markers(name: str) -> tuple[str, str]:
    """The start and end marker of block ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def names(text: str) -> list[str]:
    """The blocks of a page, in order of appearance (by their start markers)."""
    out, pos = [], 0
    while (i := text.find("<!-- ", pos)) >= 0:
        j = text.find(" -->", i)
        if j < 0:
            break
        tag = text[i + 5 : j]
        if tag.endswith(":start"):
            out.append(tag[: -len(":start")])
        pos = j
    return out


def body(text: str, name: str) -> str:
    """The text of block ``name`` (between its markers, without the newline after the start)."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"needs one {start} ... {end} pair, in that order")
    inner = text.split(start, 1)[1].split(end, 1)[0]
    return inner.removeprefix("\n")


def replace(text: str, name: str, new: str) -> str:
    """``text`` with block ``name`` holding ``new`` (which should end with a newline)."""
    body(text, name)  # checks the markers
    start, end = markers(name)
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{start}\n{new}{end}{tail}"


def update(path: Path, new: dict[str, str]) -> bool:
    """Rewrite the blocks ``new`` (name -> text) of the page ``path``; True when it changed.
    A block missing from the page is an error naming the page and its markers."""
    text = Path(path).read_text(encoding="utf-8")
    out = text
    for name, block in new.items():
        try:
            out = replace(out, name, block)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if out != text:
        write_text(path, out)
    return out != text
