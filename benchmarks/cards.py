"""Model cards whose result section a bench writes between two marker lines.

Example:
    >>> markers("uci")[1]
    '<!-- bench uci results: end -->'
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["markers", "split_card", "update_card"]


def markers(bench: str) -> tuple[str, str]:
    """The begin and end lines of ``bench``'s result section in a card."""
    return (
        f"<!-- bench {bench} results: begin (written by `pyro-bnn bench {bench} --card`) -->",
        f"<!-- bench {bench} results: end -->",
    )


def split_card(card: Path, *, bench: str) -> tuple[str, str]:
    """The card's text before and after its result section; an error naming the card and
    the markers when it lacks exactly one of each."""
    begin, end = markers(bench)
    text = card.read_text()
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{card} needs one line {begin!r} and one line {end!r}")
    head, rest = text.split(begin)
    return head, rest.split(end)[1]


def update_card(card: Path, report: str, *, bench: str) -> None:
    """Replace the card's result section with ``report`` (its title dropped)."""
    begin, end = markers(bench)
    head, tail = split_card(card, bench=bench)
    body = report.split("\n", 1)[1].strip() if report.startswith("# ") else report.strip()
    body = re.sub(r"^### ", "#### ", body, flags=re.MULTILINE)  # one level deeper in a card
    card.write_text(f"{head}{begin}\n\n{body}\n\n{end}{tail}")
