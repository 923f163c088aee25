"""The documentation stays a user's: README.md short with its quickstart up front, every relative link
in README.md, docs/ and the results index leading to a file (and heading) of the repository, the
generated pages current with the code, and the settings table true to what the service reads."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from losswatch.service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "results" / "README.md"]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def test_readme_is_at_most_12000_characters() -> None:
    assert len(README.read_text(encoding="utf-8")) <= 12_000


def test_the_quickstart_is_in_the_first_3000_characters() -> None:
    head = README.read_text(encoding="utf-8")[:3000]
    assert "pip install ." in head and "losswatch serve" in head
    # the first Python example, whole, and the set-up commands
    first = re.search(r"^```python\n.*?^```", head, re.S | re.M)
    assert first and "Monitor(" in first.group(0) and "mon.log(" in first.group(0)
    assert "losswatch demo" in head


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Relative links of ``page`` that lead to no file under ``root``, or to no such heading."""
    bad = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.is_relative_to(root) or not dest.exists():
            bad.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_resolves_in_the_repository(page: Path) -> None:
    assert not broken_links(page)


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## The grad_norm rule\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("[ok](b.md#the-grad_norm-rule) [ok](https://example.org/x.md) [gone](c.md) "
                    "[no heading](b.md#nothing) [outside](../../etc/passwd)\n"
                    "```text\n[in a code block](ignored.md)\n```\n")
    assert broken_links(page, root=tmp_path) == [
        "c.md: no such file in the repository", "b.md#nothing: no heading #nothing in docs/b.md",
        "../../etc/passwd: no such file in the repository"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_no_pointer_outside_the_repository_and_no_process_words(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for pattern in (r"\.\./shared", r"(?-i:\bDESIGN\.md)", r"notes/contracts", r"(?-i:PRIOR-ART)",
                    r"\bissue[- ]\d", r"changelog rows?\b", r"\breview"):
        assert not re.search(pattern, text, re.I), (pattern, re.search(pattern, text, re.I))


def test_generated_pages_are_current() -> None:
    res = subprocess.run([sys.executable, str(REPO / "docs" / "generate.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_generator_finds_a_stale_page(tmp_path: Path, monkeypatch) -> None:
    """--check is not vacuous: a page whose generated block was edited by hand is reported."""
    import runpy

    gen = runpy.run_path(str(REPO / "docs" / "generate.py"))
    page = (REPO / "docs" / "service.md").read_text(encoding="utf-8")
    edited = page.replace("| `LOSSWATCH_PORT` | `8000` |", "| `LOSSWATCH_PORT` | `8080` |")
    assert edited != page
    assert gen["render"](edited, gen["GENERATED"]["service.md"]) == page


def test_every_setting_in_the_table_is_read_from_its_variable() -> None:
    """The table's variable names are the ones Settings.from_env reads, with the defaults it uses."""
    assert Settings.from_env({}) == Settings()
    from losswatch.service.notify import Receiver

    probes = {int: ("7", 7), str: ("probe.example", "probe.example")}
    # settings whose values have a syntax of their own
    special = {"tokens": ("tok=projA", {"tok": frozenset({"projA"})}),
               "notify": ("http://probe.example/hook#project=p1", (Receiver("http://probe.example/hook", "p1"),)),
               "public_url": ("https://probe.example/", "https://probe.example")}
    for f in dataclasses.fields(Settings):
        env = f.metadata["env"]
        if f.name in special:
            raw, want = special[f.name]
        else:
            raw, want = probes[type(getattr(Settings(), f.name))]
        got = getattr(Settings.from_env({env: raw}), f.name)
        assert got == want, (env, got)
