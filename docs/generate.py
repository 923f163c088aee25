"""Regenerate the parts of docs/ that are read from the code, so they cannot drift from it:

- docs/service.md, the settings table: from the fields of ``losswatch.service.settings.Settings``
  (each field's metadata names its environment variable and says what it does);
- docs/detectors.md, the detector reference: from the engine's detector lists and each detector
  (name, kind, file, constructor defaults, its module's and its class's docstrings).

Each generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``
in its page; the rest of the page is written by hand.

    python docs/generate.py           # rewrite the generated parts
    python docs/generate.py --check   # exit 1 and name the stale pages (tests/test_docs.py runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    from losswatch.service.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        if f.default is not dataclasses.MISSING and f.default != "":
            default = f"`{f.default}`"
        else:
            default = "none"
        rows.append(f"| `{f.metadata['env']}` | {default} | {_cell(f.metadata['doc'])} |")
    return "\n".join(rows)


def _source_path(cls: type) -> str:
    """The class's file relative to docs/ (a link that resolves in the repository)."""
    return "../detectors/" + Path(inspect.getfile(cls)).name


def _defaults(cls: type) -> str:
    params = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        params.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(params)


def _module_doc(cls: type) -> str:
    return inspect.cleandoc(sys.modules[cls.__module__].__doc__ or "")


def _summary(cls: type) -> str:
    """The first paragraph of the detector's module docstring: one concept per file, named there."""
    return _module_doc(cls).split("\n\n", 1)[0]


def _rule(cls: type) -> str:
    """The rest of the module docstring (where a module explains more than its name), then the class's."""
    rest = _module_doc(cls).partition("\n\n")[2].strip()
    return "\n\n".join(p for p in (rest, inspect.cleandoc(cls.__doc__ or "")) if p)


def detectors_reference() -> str:
    from losswatch.detectors import objective
    from losswatch.detectors.engine import DEFAULT_DETECTORS, KIND_PRIORITY, META_DETECTORS

    entries = [(cls, None) for cls in DEFAULT_DETECTORS] + [(cls, keys) for cls, keys in META_DETECTORS]
    others = " or ".join(f"`{o}`" for o in objective.OBJECTIVES if o != objective.DEFAULT)
    out = ["| detector | kind | when it is on | what it catches |",
           "|---|---|---|---|"]
    for cls, keys in entries:
        when = "always" if keys is None else "run metadata has " + " and ".join(f"`{k}`" for k in keys)
        if cls.judges_descent:
            when += f", unless the metadata's `objective` is {others}"
        out.append(f"| [{cls.name}](#{cls.name}) | `{cls.kind}` | {when} | {_cell(_summary(cls))} |")
    ranking = ", ".join(f"`{k}`" for k, _ in sorted(KIND_PRIORITY.items(), key=lambda kv: kv[1]))
    out += ["", "Among active alerts of equal severity the advice comes from the kind listed first: " + ranking + ".",
            "", "### The run's objective", "",
            "[detectors/objective.py](../detectors/objective.py)", "",
            "```text", inspect.cleandoc(objective.__doc__ or ""), "```"]
    for cls, keys in entries:
        out += ["", f"### {cls.name}", "",
                f"Kind `{cls.kind}`, [{_source_path(cls)[3:]}]({_source_path(cls)}), "
                f"parameters: `{_defaults(cls) or '(none)'}`.", "",
                "```text", _rule(cls), "```"]
        out += _rule_modules(cls)
    return "\n".join(out)


def _rule_modules(cls: type) -> list[str]:
    """A detector whose rules live in modules of their own (``rule_modules``): one subsection each,
    in the detector's order, with the module's docstring (condition, parameters, example)."""
    out: list[str] = []
    for mod in getattr(cls, "rule_modules", ()):
        path = Path(inspect.getfile(mod))
        rel = f"{path.parent.name}/{path.name}"
        short = mod.__name__.rsplit(".", 1)[1]
        out += ["", f"#### {cls.name}: {short}", "",
                f"[detectors/{rel}](../detectors/{rel})", "",
                "```text", inspect.cleandoc(mod.__doc__ or ""), "```"]
    return out


def features_reference() -> str:
    """The shared features' settings (their defaults) and the start level, what every rule's
    "first loss" means (``features.start_level``'s docstring)."""
    from losswatch.detectors import features

    rows = ["| setting | default |", "|---|---|"]
    rows += [f"| `{k}` | `{v!r}` |" for k, v in features.DEFAULT_PARAMS.items()]
    return "\n".join(["Feature settings (`Engine(params={\"features\": {...}})`; the comments at "
                      "`DEFAULT_PARAMS` in [detectors/features.py](../detectors/features.py) say why "
                      "each value):", "", *rows, "", "### The start level (\"the first loss\")", "",
                      "```text", inspect.cleandoc(features.start_level.__doc__ or ""), "```"])


GENERATED = {
    "service.md": {"settings": settings_table},
    "detectors.md": {"features": features_reference, "detectors": detectors_reference},
}


def render(text: str, parts: dict) -> str:
    for name, build in parts.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"docs/generate.py: no '<!-- generated: {name} -->' block to fill")
        body = build()
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report pages that are not current")
    args = ap.parse_args(argv)
    stale = []
    for page, parts in GENERATED.items():
        path = DOCS / page
        old = path.read_text(encoding="utf-8")
        new = render(old, parts)
        if new != old:
            stale.append(page)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("stale, run `python docs/generate.py`: " + ", ".join(f"docs/{p}" for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
