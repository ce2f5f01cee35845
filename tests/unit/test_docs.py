"""The README is a map that stays true: its commands run, its links resolve, it stays short.

The rule for commands is in tests/documented_commands.py; the curl calls it accepts are sent
to a real server by tests/integration/test_service.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tests.documented_commands import (
    EXECUTED_PAGES,
    MAKEFILE,
    README,
    Makefile,
    commands_in_block,
    documentation_files,
    documented_commands,
    fenced_blocks,
    is_local_curl,
    runner_sources,
    why_not_run,
)

README_MAX_LINES = 200
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


@pytest.fixture(scope="module")
def makefile() -> Makefile:
    return Makefile.parse(MAKEFILE.read_text())


@pytest.fixture(scope="module")
def sources() -> dict[Path, str]:
    return runner_sources()


def test_every_documented_command_is_run_by_make_or_a_test(
    makefile: Makefile, sources: dict[Path, str]
) -> None:
    stale = [
        f"{command.where()}  <- {reason}"
        for command in documented_commands()
        if command.path not in EXECUTED_PAGES
        and (reason := why_not_run(command.text, makefile, sources))
    ]
    assert stale == [], "\n".join(stale)


def test_an_executed_page_is_read_by_the_test_that_runs_it() -> None:
    for page, test in EXECUTED_PAGES.items():
        assert page.exists() and test.exists(), (page, test)
        assert f'"{page.name}"' in test.read_text(), f"{test} does not read {page}"


def test_the_documentation_shows_commands_and_they_are_found() -> None:
    """Not vacuous: the README's two commands and its curl calls are found, and every page
    of docs/ that shows a shell block yields commands."""
    commands = documented_commands()
    readme = [c.text for c in commands if c.path == README]
    assert readme[:2] == ["make serve", "make test"]
    assert sum(is_local_curl(text) for text in readme) == 2
    for path in documentation_files():
        shell_blocks = [b for b in fenced_blocks(path.read_text(), path) if b.tag == "bash"]
        found = [c for c in commands if c.path == path]
        assert bool(shell_blocks) == bool(found), path


def test_the_parser_splits_continuations_prompts_comments_and_output() -> None:
    markdown = "\n".join(
        [
            "text `make not-a-command`",
            "```bash",
            "# a comment line",
            "make bench BENCH_ARGS='--duration 10'   # trailing comment",
            "curl -s -X POST http://127.0.0.1:3000/predict \\",
            '  -d \'{"a": 1,',
            '       "b": "# not a comment"}\'',
            "make lint && make audit; make train",
            "```",
            "```console",
            "$ make serve",
            "output line",
            "$ make report \\",
            "    SERVICE_URL=http://127.0.0.1:3000",
            "# output too",
            "```",
            "```python",
            "print('not shell')",
            "```",
        ]
    )
    blocks = list(fenced_blocks(markdown))
    assert [(b.tag, b.line) for b in blocks] == [("bash", 2), ("console", 10), ("python", 17)]
    assert commands_in_block(blocks[0].tag, blocks[0].text) == [
        "make bench BENCH_ARGS='--duration 10'",
        'curl -s -X POST http://127.0.0.1:3000/predict -d \'{"a": 1, "b": "# not a comment"}\'',
        "make lint",
        "make audit",
        "make train",
    ]
    assert commands_in_block(blocks[1].tag, blocks[1].text) == [
        "make serve",
        "make report SERVICE_URL=http://127.0.0.1:3000",
    ]


@pytest.mark.parametrize(
    ("command", "accepted"),
    [
        ("make serve", True),
        ("make bench BENCH_ARGS='--duration 10 --workers 1'", True),
        ("make container CONTAINER_BACKEND=buildah", True),  # read by tools/containers.py
        ("tools/ensure-debian-packages.sh prometheus chromium", True),  # a Makefile recipe
        ("curl -s http://127.0.0.1:3000/readyz", True),
        ("make", False),
        ("make no-such-target", False),
        ("make serve NO_SUCH_VARIABLE=1", False),
        ("make bench BENCH_ARGS='--no-such-option 1'", False),
        ("kubectl apply -k deploy/k8s", False),
        ("curl -s https://example.com/predict", False),
        ("python -m tools.no_such_tool", False),
    ],
)
def test_the_rule_accepts_only_commands_that_something_runs(
    makefile: Makefile, sources: dict[Path, str], command: str, accepted: bool
) -> None:
    assert (why_not_run(command, makefile, sources) is None) is accepted


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces become hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _without_code(markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _without_code(markdown: str) -> str:
    """The markdown without fenced blocks and inline code, where links are not links."""
    outside = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", outside)


def broken_links(path: Path) -> list[str]:
    """Relative links of a markdown file whose file (or heading anchor) does not exist."""
    broken = []
    for target in _LINK.findall(_without_code(path.read_text())):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
            broken.append(f"{path.name}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) ![gone](images/gone.png) [gone](nowhere.md)\n"
        "[bad anchor](there.md#no-such) [web](https://example.com/x.md) `[code](nowhere.md)`\n"
    )
    assert broken_links(page) == [
        "page.md: images/gone.png (no such file)",
        "page.md: nowhere.md (no such file)",
        "page.md: there.md#no-such (no such heading)",
    ]


def test_the_readme_is_a_short_map_linking_every_page_of_docs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    linked = {
        (README.parent / target.partition("#")[0]).resolve() for target in _LINK.findall(text)
    }
    pages = set((PROJECT_ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert pages <= linked, sorted(p.name for p in pages - linked)


def test_the_curl_calls_are_sent_by_an_integration_test() -> None:
    """The rule accepts local curl calls because this integration test runs every one."""
    source = (PROJECT_ROOT / "tests/integration/test_service.py").read_text()
    assert "documented_commands()" in source and "is_local_curl" in source
