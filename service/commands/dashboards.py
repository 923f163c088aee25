"""``losswatch dashboards generate|push``: the Grafana dashboards and alert rules as code.

``generate`` renders dashboards/build.py into dashboards/generated/*.json and the Grafana
alert-rule provisioning file (``--check``: exit 1 when the committed files are stale).
``push`` uploads the generated dashboards to a running Grafana through its HTTP API with
grafana-client (POST /api/dashboards/db, overwrite, into a folder it creates when missing) and,
with ``--alert-rules``, the alert rules through the alerting provisioning API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="write dashboards/generated/*.json and the Grafana alert rules")
    g.add_argument("--out", type=Path, default=None,
                   help="write under this folder instead of the package's dashboards/ folder")
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    p = sub.add_parser("push", help="upload the dashboards (and alert rules) to a running Grafana")
    p.add_argument("--grafana-url", default=os.environ.get("GRAFANA_URL"),
                   help="e.g. http://localhost:3000 (env GRAFANA_URL)")
    p.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                   help="a Grafana service-account token with Editor rights (env GRAFANA_TOKEN)")
    p.add_argument("--folder-uid", default="losswatch", help="folder to put the dashboards in (created if missing)")
    p.add_argument("--folder-title", default="losswatch")
    p.add_argument("--dir", type=Path, default=None, help="folder of dashboard JSON files (default: the generated ones)")
    p.add_argument("--alert-rules", action="store_true",
                   help="also create or update the Grafana-managed alert rules (provisioning API)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")


def run(args: argparse.Namespace) -> int:
    if args.dashboards_command == "generate":
        return _generate(args)
    return _push(args)


def _generate(args: argparse.Namespace) -> int:
    try:
        from losswatch.dashboards import build
    except ModuleNotFoundError as e:
        print(f"losswatch dashboards generate: needs {e.name} (pip install 'losswatch[dashboards]')", file=sys.stderr)
        return EXIT_ERROR
    root = args.out if args.out is not None else build.HERE
    if args.check:
        bad = build.stale(root)
        for path in bad:
            print(f"stale: {path} (run `losswatch dashboards generate`)", file=sys.stderr)
        return 1 if bad else 0
    for path in build.generate(root):
        print(path)
    return 0


def _package_dir() -> Path:
    import losswatch.dashboards

    return Path(losswatch.dashboards.__file__).resolve().parent


def _push(args: argparse.Namespace) -> int:
    prog = "losswatch dashboards push"
    if not args.grafana_url:
        print(f"{prog}: --grafana-url (or GRAFANA_URL) is required", file=sys.stderr)
        return EXIT_ERROR
    if not args.token:
        print(f"{prog}: --token (or GRAFANA_TOKEN) is required: a service-account token with Editor rights",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaClientError, GrafanaException
    except ModuleNotFoundError as e:
        print(f"{prog}: needs {e.name} (pip install 'losswatch[dashboards]')", file=sys.stderr)
        return EXIT_ERROR

    folder = args.dir if args.dir is not None else _package_dir() / "generated"
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"{prog}: no dashboard JSON in {folder}", file=sys.stderr)
        return EXIT_ERROR
    dashboards = []
    for f in files:
        try:
            dashboards.append((f.name, json.loads(f.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as e:
            print(f"{prog}: {f}: not a dashboard JSON ({e})", file=sys.stderr)
            return EXIT_ERROR

    api = GrafanaApi.from_url(url=args.grafana_url, credential=args.token, timeout=args.timeout)
    try:
        _ensure_folder(api, args.folder_uid, args.folder_title, GrafanaClientError)
        for name, model in dashboards:
            model = dict(model)
            model.pop("id", None)  # Grafana matches on uid; an id from elsewhere would conflict
            res = api.dashboard.update_dashboard({"dashboard": model, "overwrite": True, "folderUid": args.folder_uid,
                                                  "message": "losswatch dashboards push"})
            print(f"{name}: {res.get('status', 'ok')} {args.grafana_url.rstrip('/')}{res.get('url', '')}")
        if args.alert_rules:
            n = _push_alert_rules(api, args.folder_uid, GrafanaClientError)
            print(f"alert rules: {n} created or updated in folder {args.folder_uid}")
    except GrafanaException as e:
        print(f"{prog}: Grafana at {args.grafana_url} refused: {_grafana_error(e)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"{prog}: cannot reach Grafana at {args.grafana_url}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # niquests' connection errors are not OSErrors
        if type(e).__module__.startswith(("niquests", "urllib3", "requests")):
            print(f"{prog}: cannot reach Grafana at {args.grafana_url}: {type(e).__name__}", file=sys.stderr)
            return EXIT_ERROR
        raise
    return 0


def _ensure_folder(api: Any, uid: str, title: str, client_error: type) -> None:
    try:
        api.folder.get_folder(uid)
    except client_error as e:
        if getattr(e, "status_code", None) != 404:
            raise
        api.folder.create_folder(title, uid=uid)


def _push_alert_rules(api: Any, folder_uid: str, client_error: type) -> int:
    """Create or update every rule of the generated alert provisioning file (uids are stable)."""
    import yaml

    spec = yaml.safe_load((_package_dir() / "grafana" / "provisioning" / "alerting" / "losswatch-alerts.yml").read_text())
    n = 0
    for group in spec["groups"]:
        for rule in group["rules"]:
            body = {**rule, "folderUID": folder_uid, "ruleGroup": group["name"], "orgID": group.get("orgId", 1)}
            try:
                api.alertingprovisioning.get_alertrule(rule["uid"])
                exists = True
            except client_error as e:
                if getattr(e, "status_code", None) != 404:
                    raise
                exists = False
            if exists:
                api.alertingprovisioning.update_alertrule(rule["uid"], body)
            else:
                api.alertingprovisioning.create_alertrule(body)
            n += 1
    return n


def _grafana_error(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    msg = getattr(e, "message", None) or str(e)
    hint = {401: " (the token is missing, wrong or expired)", 403: " (the token lacks Editor rights)"}.get(status, "")
    return f"{status} {msg}{hint}" if status else f"{msg}{hint}"
