"""The ``losswatch`` command. Each sub-command lives in its own module under
``losswatch.service.commands`` with two functions, ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``losswatch replay`` does not pay for
FastAPI and ``losswatch serve`` does not pay for torch. ``runs``, ``show`` and ``export`` read a
running service with the standard library only, so they work in a client-only install."""

from __future__ import annotations

import argparse
import importlib
import sys

from losswatch.client.version import __version__

# sub-command -> (module under losswatch.service.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the service (embedded in-memory store by default)"),
    "demo": ("demo", "start the service, train a small model with a far too high LR, watch the alerts"),
    "runs": ("runs", "list the runs a running service holds, newest first"),
    "show": ("show", "one run of a running service: health, alerts, advice, a loss sparkline"),
    "export": ("export", "write a run's stored steps as CSV or JSON lines"),
    "replay": ("replay", "replay a recorded run through the detectors, strictly online"),
    "lr-find": ("lr_find", "analyse a recorded LR range test and suggest an LR"),
    "policies": ("policies", "record and query the LR policy database"),
    "evaluate": ("evaluate", "compare LR policies over recorded runs"),
    "tune": ("tune", "grid/random LR search, locally or on Ray Tune"),
    "dashboards": ("dashboards", "generate or push the Grafana dashboards and Prometheus rules"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="losswatch", description="Training-health monitor.")
    parser.add_argument("--version", action="version", version=f"losswatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        mod = _load(module)
        if mod is not None:
            mod.add_arguments(p)
    return parser


def _load(module: str):
    try:
        return importlib.import_module(f"losswatch.service.commands.{module}")
    except ModuleNotFoundError:
        # a command whose module (or optional dependency) is absent is listed but says why
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    mod = _load(args._module)
    if mod is None:
        print(f"losswatch {args.command}: not available in this installation "
              f"(install losswatch[server])", file=sys.stderr)
        return 2
    return int(mod.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
