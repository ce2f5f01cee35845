"""The shell commands and code the README and docs/ show, and what may run them.

Rule (issue 10): every shell command shown in the README and in docs/ is one that a test or a
`make` target runs, so that none goes stale. A command in a fenced block tagged bash, sh,
shell or console is accepted when it is one of:
- `make TARGET... [VAR=value ...]`, every TARGET a rule of the Makefile and every VAR a
  variable the Makefile reads (or a tool reads from the environment by its quoted name), and
  every `--option` in a value one that a tool declares (as the quoted string "--option");
- a `curl` call to the local service (`LOCAL_URL`): tests/integration/test_service.py sends
  every one of them to a real server and checks the answer;
- text that appears, whitespace-normalised, in a Makefile recipe or in the source of a test
  or a tool (tests/, tools/) that runs it. No placeholders: write a runnable command;
- any command of a page that a test runs block by block against a real server
  (`EXECUTED_PAGES`: the page and the test that executes every fenced block of it).

Used by tests/unit/test_docs.py (the rule) and tests/integration/test_service.py (the calls).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.paths import PROJECT_ROOT, TOOLS_DIR

SHELL_TAGS = frozenset({"bash", "sh", "shell", "console"})
LOCAL_URL = "http://127.0.0.1:3000"
README = PROJECT_ROOT / "README.md"
MAKEFILE = PROJECT_ROOT / "Makefile"
# Where a command may appear to count as run: tests and tools (this rule's own files excluded,
# since they quote commands without running them).
RUNNER_DIRS = (PROJECT_ROOT / "tests", TOOLS_DIR)
RULE_FILES = frozenset({Path(__file__).resolve(), PROJECT_ROOT / "tests/unit/test_docs.py"})
# Pages whose every bash and python block a test runs as it is, against a real server.
EXECUTED_PAGES: dict[Path, Path] = {
    PROJECT_ROOT / "docs/protocols.md": PROJECT_ROOT / "tests/integration/test_protocol_docs.py",
}
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_SEPARATORS = ("&&", "||", ";")


def documentation_files() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class FencedBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    tag: str  # first word of the info string, lower case ("" when none)
    text: str


@dataclass(frozen=True)
class DocCommand:
    path: Path
    line: int  # 1-based line of the block's opening fence
    text: str  # whitespace-normalised

    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}: {self.text}"


def fenced_blocks(markdown: str, path: Path = README) -> Iterator[FencedBlock]:
    """Every fenced code block of `markdown` (``` or ~~~ fences, closed by the same fence)."""
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index].strip())
        if not opening:
            index += 1
            continue
        fence, tag = opening.group(1), opening.group(2).lower()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end])
            end += 1
        yield FencedBlock(path, index + 1, tag, "\n".join(body))
        index = end + 1


def normalise(text: str) -> str:
    return " ".join(text.split())


def _scan(text: str) -> tuple[list[str], bool]:
    """Split shell text into commands: `\\`-newline continues a line, quotes may span lines,
    comments (`#` at the start of a word, outside quotes) are dropped, and newlines, `;`, `&&`
    and `||` outside quotes separate commands. Also says whether the text ends incomplete
    (inside quotes or after a continuation backslash)."""
    commands: list[str] = []
    current: list[str] = []
    quote: str | None = None
    index = 0

    def finish() -> None:
        command = normalise("".join(current))
        if command:
            commands.append(command)
        current.clear()

    while index < len(text):
        char = text[index]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"' and index + 1 < len(text):
                current.append(text[index + 1])
                index += 1
        elif char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            current.append(" " if following == "\n" else char + following)
            index += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1].isspace()):
            while index + 1 < len(text) and text[index + 1] != "\n":
                index += 1
        elif char == "\n":
            finish()
        elif any(text.startswith(sep, index) for sep in _SEPARATORS):
            finish()
            index += 1 if char == ";" else 2
            continue
        else:
            current.append(char)
        index += 1
    incomplete = quote is not None or text.rstrip(" ").endswith("\\")
    finish()
    return commands, incomplete


def commands_in_block(tag: str, text: str) -> list[str]:
    """The commands of a shell block; in a console block, only lines after a `$ ` prompt
    (and their continuation lines) are commands, everything else is output."""
    if tag != "console":
        return _scan(text)[0]
    commands: list[str] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        if pending is not None:
            pending.append(line)
        elif line.lstrip().startswith("$ "):
            pending = [line.lstrip()[2:]]
        else:
            continue  # output
        found, incomplete = _scan("\n".join(pending))
        if not incomplete:
            commands.extend(found)
            pending = None
    if pending is not None:
        commands.extend(_scan("\n".join(pending))[0])
    return commands


def documented_commands(paths: Iterable[Path] | None = None) -> list[DocCommand]:
    """Every shell command shown in fenced blocks of the documentation."""
    found: list[DocCommand] = []
    for path in documentation_files() if paths is None else paths:
        for block in fenced_blocks(path.read_text(), path):
            if block.tag in SHELL_TAGS:
                found += [
                    DocCommand(path, block.line, command)
                    for command in commands_in_block(block.tag, block.text)
                ]
    return found


def is_local_curl(command: str) -> bool:
    """A curl call to the local service: run for real by tests/integration/test_service.py."""
    words = shlex.split(command)
    return bool(words) and words[0] == "curl" and any(w.startswith(LOCAL_URL) for w in words)


@dataclass(frozen=True)
class Makefile:
    targets: frozenset[str]
    variables: frozenset[str]
    recipes: str  # every recipe line, whitespace-normalised, one per line

    @classmethod
    def parse(cls, text: str) -> Makefile:
        targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
        variables = set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", text))
        variables |= set(re.findall(r"^(?:export\s+)?([A-Z][A-Z0-9_]*)\s*[?:]?=", text, re.M))
        recipes = "\n".join(normalise(line) for line in text.splitlines() if line.startswith("\t"))
        return cls(frozenset(targets), frozenset(variables), recipes)


def runner_sources() -> dict[Path, str]:
    """Whitespace-normalised source of every test and tool file that may run a command."""
    sources: dict[Path, str] = {}
    for folder in RUNNER_DIRS:
        for path in sorted(folder.rglob("*")):
            if path.suffix in {".py", ".sh", ".lua"} and path.resolve() not in RULE_FILES:
                sources[path] = normalise(path.read_text())
    return sources


def why_not_run(command: str, makefile: Makefile, sources: dict[Path, str]) -> str | None:
    """None when the rule accepts `command`, else the reason it does not."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        return f"not a shell command ({exc})"
    if not words:
        return "empty command"
    if words[0] == "make":
        assignments = [w for w in words[1:] if "=" in w and not w.startswith("-")]
        goals = [w for w in words[1:] if w not in assignments]
        if not goals:
            return "`make` without a target"
        unknown = [g for g in goals if g not in makefile.targets]
        if unknown:
            return f"no Makefile target {', '.join(unknown)}"
        tools = [text for path, text in sources.items() if path.is_relative_to(TOOLS_DIR)]
        for assignment in assignments:
            variable = assignment.split("=", 1)[0]
            read_by_a_tool = any(f'"{variable}"' in source for source in tools)
            if variable not in makefile.variables and not read_by_a_tool:
                return f"neither the Makefile nor a tool reads {variable}"
            for option in (w for w in shlex.split(assignment.split("=", 1)[1]) if w[:2] == "--"):
                if not any(f'"{option}"' in source for source in tools):
                    return f"no tool or test knows the option {option}"
        return None
    if is_local_curl(command):
        return None
    if command in makefile.recipes or any(command in source for source in sources.values()):
        return None
    return "not a make target, and no Makefile recipe, test or tool runs it"
