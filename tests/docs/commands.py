"""The shell commands a reader copies from the documentation: every line of every fenced
``bash`` / ``sh`` / ``shell`` / ``console`` block of README.md (and of ``docs/**/*.md`` once the
site exists), with ``\\`` continuations joined, ``$ `` prompts and trailing ``# comments`` removed,
and whitespace collapsed, in the order the reader meets them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(bash|sh|shell|console)\s*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class DocCommand:
    text: str    # the command, normalised (comment removed, continuations joined)
    file: str    # where it is written, relative to the repository
    line: int    # its first line there

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def documentation_files(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a ``#`` that starts a word, outside quotes).

    >>> strip_comment('make data   # annotations -> data/museg/')
    'make data'
    >>> strip_comment('echo "a # b" x  # c')
    'echo "a # b" x'
    """
    quote, prev = None, " "
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            return line[:i].rstrip()
        prev = ch
    return line.rstrip()


def commands_in(path: Path, root: Path = REPO_ROOT) -> list[DocCommand]:
    text = path.read_text()
    found: list[DocCommand] = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", 0
        for offset, raw in enumerate(block.group(2).splitlines()):
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            if not pending:
                start = first_line + offset
            line = strip_comment(line) if not line.startswith("#") else ""
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            command = " ".join((pending + line).split())
            pending = ""
            if command:
                found.append(DocCommand(command, str(path.relative_to(root)), start))
    return found


def documented_commands(root: Path = REPO_ROOT) -> list[DocCommand]:
    """Every documented command, first occurrence only (the same command repeated runs once)."""
    seen: dict[str, DocCommand] = {}
    for path in documentation_files(root):
        for command in commands_in(path, root):
            seen.setdefault(command.text, command)
    return list(seen.values())
