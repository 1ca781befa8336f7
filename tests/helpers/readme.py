"""The command lines of README.md and of the manual's pages (docs/), read from the files themselves.

What a new user types, page by page and section by section. ``bash`` blocks hold commands to type (their output is not shown); ``console`` blocks hold
``$ command`` lines, each followed by the output the README promises. A line ending in
``\\`` goes on with the next. In a ``&&`` chain only the project's own commands count: the
others set up an environment (``python3.11 -m venv``, ``. .venv/bin/activate``, ``pip
install``) that a test already has.
"""

import getpass
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.tracking import BIN, LEAKY_ENV

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"

# What the project's own command lines start with (after any VAR=value assignments).
PROJECT_COMMANDS = re.compile(r"^(?:\w+=\S+\s+)*(mlflow run |python -m registry_tools|python -m steps\.)")
PROMPT_ANSWER = re.compile(r"\[y/N\]: (y|n)$")


@dataclass(frozen=True)
class Command:
    """One command line as a page writes it, where it is, and what it shows after it."""

    page: str  # the file it appears in, from the repository's root: README.md or docs/<page>.md
    section: str  # the heading it appears under
    text: str
    shown: tuple[str, ...] | None  # the output a console block shows; None for a bash block

    @property
    def answer(self) -> str | None:
        """What the README types at a confirmation prompt it shows (``[y/N]: y``)."""
        for line in self.shown or ():
            if match := PROMPT_ANSWER.search(line):
                return match.group(1)
        return None

    @property
    def shows_an_error(self) -> bool:
        return any(line.startswith("error: ") for line in self.shown or ())

    def __str__(self) -> str:
        return f"{self.page}, {self.section}: {self.text}"


def _joined(lines: list[str]) -> list[str]:
    """Lines with their ``\\`` continuations folded in, as the shell reads them."""
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            part = line.rstrip()[:-1]
            pending += (part.strip() if pending else part.rstrip()) + " "
            continue
        joined.append((pending + line.strip()) if pending else line)
        pending = ""
    return joined


def _project_parts(line: str) -> list[str]:
    return [part.strip() for part in line.split(" && ") if PROJECT_COMMANDS.match(part.strip())]


def _block_commands(page: str, section: str, language: str, body: list[str]) -> list[Command]:
    commands = []
    if language == "bash":
        for line in _joined(body):
            if line.strip() and not line.lstrip().startswith("#"):
                commands += [Command(page, section, part, None) for part in _project_parts(line)]
    elif language == "console":
        entries: list[tuple[str, list[str]]] = []
        for line in _joined(body):
            if line.startswith("$ "):
                entries.append((line[2:].strip(), []))
            elif entries:
                entries[-1][1].append(line)
        for text, shown in entries:
            commands += [Command(page, section, part, tuple(shown)) for part in _project_parts(text)]
    return commands


def _code_blocks(path: Path) -> list[tuple[str, str, list[str]]]:
    """Every fenced code block of a page in order, as (the heading it stands under, language, lines)."""
    found, section, language, body = [], "", None, []
    for line in path.read_text().splitlines():
        if language is None and (heading := re.match(r"^#{1,4} (.+)$", line)):
            section = heading.group(1).strip()
        elif line.startswith("```"):
            if language is None:
                language, body = line[3:].strip() or "text", []
            else:
                found.append((section, language, body))
                language = None
        elif language is not None:
            body.append(line)
    return found


def commands(path: Path) -> list[Command]:
    """Every project command line of a page (README.md or one of docs/), in the order a reader meets them."""
    page = path.relative_to(REPO).as_posix()
    return [
        command
        for section, language, body in _code_blocks(path)
        for command in _block_commands(page, section, language, body)
    ]


def section_blocks(path: Path, section: str) -> list[tuple[str, list[str]]]:
    """The code blocks under one heading of a page, as (language, lines), every line of them."""
    return [(language, body) for heading, language, body in _code_blocks(path) if heading == section]


def pages() -> list[Path]:
    """README.md and every page of the manual."""
    return [README, *sorted(DOCS.rglob("*.md"))]


class _MkDocsLoader(yaml.SafeLoader):
    """mkdocs.yml as data: its ``!!python/name:`` tags name functions for MkDocs to import, not values."""


_MkDocsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def navigation() -> list[str]:
    """The pages mkdocs.yml's ``nav`` lists, in its order, as paths under docs/."""

    def walk(entries) -> list[str]:
        found = []
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                found += walk(value) if isinstance(value, list) else [value]
        return found

    return walk(yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_MkDocsLoader)["nav"])


def section_text(path: Path, heading: str) -> str:
    """The text under ``## heading`` of a page, up to the next heading of that level or above (outside code)."""
    taken, inside, fenced = [], False, False
    for line in path.read_text().splitlines(keepends=True):
        if not fenced and re.match(r"^#{1,2} ", line):
            if inside:
                break
            inside = line.rstrip("\n") == f"## {heading}"
            continue
        fenced ^= line.startswith("```")
        if inside:
            taken.append(line)
    if not taken:
        raise ValueError(f"{path.name} has no section {heading!r}")
    return "".join(taken)


def fresh_clone(target: Path) -> Path:
    """The project's files as a clone has them: what git tracks, as the working tree holds it."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def page_command(page: str, section: str, containing: str) -> str:
    """The first command line of ``page``'s ``section`` that contains ``containing``, exactly as written."""
    return next(c.text for c in commands(REPO / page) if c.section == section and containing in c.text)


def new_user_env() -> dict:
    """A shell with the project's virtualenv active and nothing else set: no store, run or credentials."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def comparable(text: str) -> list[str]:
    """Output lines without what differs from run to run: times, run IDs, the user, column padding."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", line)
        line = re.sub(r"\b[0-9a-f]{8}\b", "<run>", line)
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def promised(command: Command) -> list[str]:
    """The output a page shows, as the test sees it: the prompt's answer is typed, not printed."""
    text = "\n".join(command.shown).replace("[y/N]: y\n", "[y/N]: ").replace("[y/N]: n\n", "[y/N]: ")
    return comparable(re.sub(r"\broot\b", getpass.getuser(), text))


def printed_in_order(expected: list[str], actual: list[str]) -> bool:
    """Each expected line appears, in order; ``...`` may stand for any number of lines."""
    if "..." not in expected:
        return expected == actual
    remaining = iter(actual)
    return all(any(line == seen for seen in remaining) for line in expected if line != "...")
