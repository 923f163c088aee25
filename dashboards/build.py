"""The Grafana dashboards and Grafana alert rules of losswatch, as code (grafana-foundation-sdk).

``python -m losswatch.dashboards.build`` (or ``losswatch dashboards generate``) writes

    dashboards/generated/losswatch-fleet.json      fleet overview: runs by health, alerts by kind, worst runs
    dashboards/generated/losswatch-run.json        one run: loss, grad-norm, LR (log scales), alerts as
                                                   annotations, open alerts with their advice
    dashboards/generated/losswatch-service.json    the service itself: ingest rate, latency, errors
    dashboards/grafana/provisioning/alerting/losswatch-alerts.yml
                                                   Grafana-managed alert rules, translated from the
                                                   Prometheus rules in dashboards/prometheus/alerts.rules.yml

The generated files are committed; tests/test_dashboards.py regenerates them and fails when the
committed copies are stale. Every PromQL expression here is executed against a real Prometheus
scraping a real service in tests/test_prometheus_scrape.py.

Metric names: notes/contracts.md (exported by losswatch.service.metrics); recording rules:
dashboards/prometheus/recording.rules.yml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import alerting as alert_b
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import expr as expr_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as state_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

HERE = Path(__file__).resolve().parent
ALERT_RULES = HERE / "prometheus" / "alerts.rules.yml"

# The provisioned Prometheus datasource (dashboards/grafana/provisioning/datasources/). Dashboards
# go through a datasource variable defaulting to it, so they also work when pushed to a Grafana
# whose Prometheus has another uid.
DATASOURCE_UID = "losswatch-prometheus"
DS = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
FOLDER_TITLE = "losswatch"
JOB = 'job="losswatch"'  # the scrape job name in deploy/prometheus.yml

FLEET_UID = "losswatch-fleet"
RUN_UID = "losswatch-run"
SERVICE_UID = "losswatch-service"

P = 'project=~"$project"'
R = 'run="$run", project=~"$project"'

HEALTH_NAMES = {0: ("ok", "green"), 1: ("warning", "orange"), 2: ("critical", "red")}

# What losswatch typically advises per alert kind (DESIGN.md "Alerts and actions"). Prometheus
# carries the kind, not the action's parameters: the exact action and its reason are in the
# REST API (GET /v1/runs/{run}/alerts), linked from the run dashboard.
ADVICE = {
    "nan": "Roll back to the last good checkpoint, then lower the LR or clip gradients",
    "divergence": "Cut the LR (typically 10x) or roll back",
    "spike": "Clip the gradient norm or skip the batch; watch whether it recovers",
    "oscillation": "Lower the LR",
    "plateau": "Raise the LR if it is tiny; lower it if the loss is noisy",
    "dead": "Stop and check data, labels and init; restart with a lower LR if it blew up first",
    "grad_explosion": "Clip the gradient norm",
    "grad_vanishing": "Raise the LR or check initialisation and warmup",
    "lr_anomaly": "Check the LR schedule (warmup, stepping per epoch, peak)",
    "overfitting": "Stop early or regularise: the validation loss rises",
}


# ============================================================================ helpers


def q(expr: str, legend: str | None = None, ref: str = "A", instant: bool = False,
      table: bool = False) -> prom_b.Dataquery:
    """A Prometheus query on the dashboard's datasource."""
    b = prom_b.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend is not None:
        b = b.legend_format(legend)
    if instant:
        b = b.instant()
    else:
        b = b.range()
    if table:
        b = b.format(prom_m.PromQueryFormat.TABLE)
    return b


def log_axis() -> common_b.ScaleDistributionConfig:
    return common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.LOG).log(10)


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(
        [dash_m.Threshold(value=v, color=c) for v, c in steps])


def health_mapping() -> list[dash_m.ValueMap]:
    return [dash_m.ValueMap(options={str(v): dash_m.ValueMappingResult(text=name, color=color, index=v)
                                     for v, (name, color) in HEALTH_NAMES.items()})]


def advice_mapping() -> list[dash_m.ValueMap]:
    return [dash_m.ValueMap(options={kind: dash_m.ValueMappingResult(text=text, index=i)
                                     for i, (kind, text) in enumerate(ADVICE.items())})]


def timeseries(title: str, *targets: prom_b.Dataquery, unit: str = "short", log: bool = False,
               description: str = "", span: int = 12, height: int = 8, stacked: bool = False,
               bars: bool = False) -> ts_b.Panel:
    p = (ts_b.Panel().title(title).datasource(DS).targets(list(targets)).unit(unit).span(span)
         .height(height).line_width(1).fill_opacity(10 if not bars else 80).show_points(common_m.VisibilityMode.NEVER)
         .legend(common_b.VizLegendOptions().display_mode(common_m.LegendDisplayMode.LIST)
                 .placement(common_m.LegendPlacement.BOTTOM).show_legend(True))
         .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI)
                  .sort(common_m.SortOrder.DESCENDING)))
    if description:
        p = p.description(description)
    if log:
        p = p.scale_distribution(log_axis())
    if stacked:
        p = p.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(common_m.GraphDrawStyle.BARS)
    return p


def stat(title: str, target: prom_b.Dataquery, unit: str = "short", description: str = "",
         span: int = 4, height: int = 4, mappings: list | None = None,
         steps: tuple[tuple[float | None, str], ...] = ((None, "text"),)) -> stat_b.Panel:
    p = (stat_b.Panel().title(title).datasource(DS).with_target(target).unit(unit).span(span).height(height)
         .color_mode(common_m.BigValueColorMode.BACKGROUND if len(steps) > 1 else common_m.BigValueColorMode.VALUE)
         .graph_mode(common_m.BigValueGraphMode.NONE)
         .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .thresholds(thresholds(*steps)))
    if description:
        p = p.description(description)
    if mappings:
        p = p.mappings(mappings)
    return p


def variables(run: bool = False, project: bool = True) -> list[Any]:
    out: list[Any] = [
        dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(dash_m.VariableOption(selected=True, text="Prometheus (losswatch)", value=DATASOURCE_UID)),
    ]
    if project:
        out.append(dash_b.QueryVariable("project").label("Project").datasource(DS)
                   .query("label_values(losswatch_run_health, project)")
                   .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dash_m.VariableSort.ALPHABETICAL_ASC)
                   .multi(True).include_all(True).all_value(".*"))
    if run:
        out.append(dash_b.QueryVariable("run").label("Run").datasource(DS)
                   .query('label_values(losswatch_run_step{project=~"$project"}, run)')
                   .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dash_m.VariableSort.ALPHABETICAL_ASC))
        out.append(dash_b.TextBoxVariable("losswatch_url").label("losswatch URL")
                   .default_value("http://localhost:8000")
                   .description("Base URL of the losswatch service, for the links to the full advice"))
    return out


def base(uid: str, title: str, description: str) -> dash_b.Dashboard:
    return (dash_b.Dashboard(title).uid(uid).description(description).tags(["losswatch"])
            .editable().time("now-6h", "now").refresh("30s").timezone("browser")
            .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
            .link(dash_b.DashboardLink("losswatch").type(dash_m.DashboardLinkType.DASHBOARDS)
                  .tags(["losswatch"]).as_dropdown(True).include_vars(True).keep_time(True)))


# ============================================================================ dashboards


def fleet_dashboard() -> dash_b.Dashboard:
    worst = [
        ("A", f"sort_desc(max by (run, project) (losswatch_run_health{{{P}}}))", "Health"),
        ("B", f"max by (run, project) (losswatch_run_step{{{P}}})", "Step"),
        ("C", f"max by (run, project) (losswatch_run_loss{{{P}}})", "Loss"),
        ("D", f"max by (run, project) (losswatch_run_grad_norm{{{P}}})", "Grad norm"),
        ("E", f"max by (run, project) (losswatch_run_lr{{{P}}})", "LR"),
        ("F", f"time() - max by (run, project) (losswatch_run_last_seen_timestamp_seconds{{{P}}})", "Quiet for"),
    ]
    run_link = dash_b.DashboardLink("Open run").url(
        f"/d/{RUN_UID}/losswatch-run?var-project=${{__data.fields.project}}&var-run=${{__data.fields.run}}&${{__url_time_range}}")
    worst_table = (
        table_b.Panel().title("Worst runs now").datasource(DS).span(24).height(10)
        .description("Every run exported right now, worst health first. Click a run to open it.")
        .targets([q(e, ref=ref, instant=True, table=True) for ref, e, _ in worst])
        .with_transformation(dash_m.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(dash_m.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "indexByName": {"run": 0, "project": 1, **{f"Value #{ref}": i + 2 for i, (ref, _, _) in enumerate(worst)}},
            "renameByName": {f"Value #{ref}": name for ref, _, name in worst},
        }))
        .sort_by([common_b.TableSortByFieldState().display_name("Health").desc(True)])
        .override_by_name("Health", [dash_m.DynamicConfigValue(id_val="mappings", value=health_mapping()),
                                     dash_m.DynamicConfigValue(id_val="custom.cellOptions",
                                                               value={"type": "color-background"})])
        .override_by_name("Quiet for", [dash_m.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("run", [dash_m.DynamicConfigValue(id_val="links", value=[run_link.build()])])
    )
    open_alerts = (
        table_b.Panel().title("Open alerts").datasource(DS).span(24).height(8)
        .description("One row per open alert episode (kind and severity) of every run.")
        .with_target(q(f"max by (run, project, kind, severity) (losswatch_run_active_alerts{{{P}}}) == 1",
                       instant=True, table=True))
        .with_transformation(dash_m.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "Value": True},
            "indexByName": {"run": 0, "project": 1, "kind": 2, "severity": 3}}))
        .override_by_name("run", [dash_m.DynamicConfigValue(id_val="links", value=[run_link.build()])])
    )
    d = base(FLEET_UID, "losswatch / fleet", "All monitored training runs: health, alerts, the worst runs now.")
    d = d.variables(variables())
    d = d.annotation(dash_b.AnnotationQuery().name("Actions applied").datasource(DS).enable(True)
                     .icon_color("blue").expr("sum by (type) (increase(losswatch_actions_applied_total[1m])) > 0"))
    d = d.with_row(dash_b.Row("Now"))
    for value, (name, color) in HEALTH_NAMES.items():
        d = d.with_panel(stat(f"Runs {name}", q(f"count(losswatch_run_health{{{P}}} == {value}) or vector(0)", instant=True),
                              span=6, steps=((None, "green"), (1, color)) if value else ((None, "green"),)))
    d = d.with_panel(stat("Open alerts", q(f"count(losswatch_run_active_alerts{{{P}}} == 1) or vector(0)", instant=True),
                          span=6, steps=((None, "green"), (1, "orange"))))
    d = d.with_row(dash_b.Row("Over time"))
    d = d.with_panel(
        timeseries("Runs by health",
                   *[q(f"count(losswatch_run_health{{{P}}} == {v}) or vector(0)", legend=name, ref="ABC"[v])
                     for v, (name, _) in HEALTH_NAMES.items()],
                   stacked=True, span=8, description="Runs exported by the service, by health.")
        .color_scheme(dash_b.FieldColor().mode(dash_m.FieldColorModeId.FIXED))
        .overrides([dash_b.DashboardFieldConfigSourceOverrides().matcher(dash_m.MatcherConfig(id_val="byName", options=name))
                    .properties([dash_m.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})])
                    for _, (name, color) in HEALTH_NAMES.items()]))
    d = d.with_panel(timeseries(
        "Open alerts by kind", q(f"count by (kind) (losswatch_run_active_alerts{{{P}}} == 1)", legend="{{kind}}"),
        stacked=True, span=8, description="Alert episodes open at each moment, by kind."))
    d = d.with_panel(timeseries(
        "Alerts raised per minute, by kind (all projects)",
        q("sum by (kind) (losswatch:alerts:rate5m) * 60", legend="{{kind}}"),
        unit="short", bars=True, span=8,
        description="New alert episodes per minute (5 min average). The counter has no project label."))
    d = d.with_row(dash_b.Row("Runs"))
    d = d.with_panel(worst_table)
    d = d.with_panel(open_alerts)
    return d


def run_dashboard() -> dash_b.Dashboard:
    api_link = (dash_b.DashboardLink("Full advice (losswatch API)").type(dash_m.DashboardLinkType.LINK)
                .url("${losswatch_url}/v1/runs/${run}/alerts").target_blank(True).icon("external link"))
    d = base(RUN_UID, "losswatch / run", "One training run: loss, gradient norm and LR with the alerts raised on them.")
    d = d.variables(variables(run=True)).link(api_link)
    d = d.annotation(dash_b.AnnotationQuery().name("losswatch alerts").datasource(DS).enable(True)
                     .icon_color("red").expr(f"max by (kind, severity) (losswatch_run_active_alerts{{{R}}}) == 1"))
    d = d.with_row(dash_b.Row("Now"))
    d = d.with_panel(stat("Health", q(f"max(losswatch_run_health{{{R}}})", instant=True), span=4,
                          mappings=health_mapping(), steps=((None, "green"), (1, "orange"), (2, "red"))))
    d = d.with_panel(stat("Step", q(f"max(losswatch_run_step{{{R}}})", instant=True), span=4))
    d = d.with_panel(stat("Loss", q(f"max(losswatch_run_loss{{{R}}})", instant=True), span=4, unit="none"))
    d = d.with_panel(stat("Grad norm", q(f"max(losswatch_run_grad_norm{{{R}}})", instant=True), span=4, unit="none"))
    d = d.with_panel(stat("LR", q(f"max(losswatch_run_lr{{{R}}})", instant=True), span=4, unit="sci"))
    d = d.with_panel(stat("Quiet for", q(f"time() - max(losswatch_run_last_seen_timestamp_seconds{{{R}}})", instant=True),
                          span=4, unit="s", steps=((None, "green"), (300, "orange"), (600, "red")),
                          description="Seconds since the run's last batch reached the service."))
    advice = (
        table_b.Panel().title("Open alerts and what to do").datasource(DS).span(24).height(6)
        .description("Typical advice per alert kind. The exact action (e.g. the LR factor, the step to roll "
                     "back to) and its reason: the link 'Full advice (losswatch API)' above, or `losswatch replay`.")
        .with_target(q(f'label_replace(max by (kind, severity) (losswatch_run_active_alerts{{{R}}}) == 1, '
                       f'"advice", "$1", "kind", "(.*)")', instant=True, table=True))
        .with_transformation(dash_m.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "Value": True},
            "indexByName": {"severity": 0, "kind": 1, "advice": 2},
            "renameByName": {"advice": "Recommendation"}}))
        .override_by_name("advice", [dash_m.DynamicConfigValue(id_val="mappings", value=advice_mapping())])
        .no_value("No open alert: nothing to do")
    )
    d = d.with_panel(advice)
    d = d.with_row(dash_b.Row("Signals"))
    d = d.with_panel(timeseries("Loss", q(f"max(losswatch_run_loss{{{R}}})", legend="loss"), log=True, unit="none",
                                description="Training loss, log scale: divergence shows as a straight climb."))
    d = d.with_panel(timeseries("Gradient norm", q(f"max(losswatch_run_grad_norm{{{R}}})", legend="grad norm"),
                                log=True, unit="none", description="Global gradient norm, log scale."))
    d = d.with_panel(timeseries("Learning rate", q(f"max(losswatch_run_lr{{{R}}})", legend="lr"), log=True, unit="sci",
                                description="LR as the client reported it, log scale (warmup and decay are straight lines)."))
    d = d.with_panel(timeseries("Spike rate", q(f"max(losswatch_run_spike_rate{{{R}}})", legend="spikes / record"),
                                unit="percentunit", description="Share of the last 128 records that were loss "
                                "spikes. One spike is a note; a rate well above the run's own past is a burst."))
    d = d.with_panel(timeseries("Steps per second", q(f"rate(losswatch_run_step{{{R}}}[$__rate_interval])", legend="steps/s"),
                                unit="short", description="Training throughput as seen by the service; 0 = the run is stuck."))
    d = d.with_panel(
        state_b.Panel().title("Health over time").datasource(DS).span(24).height(4)
        .with_target(q(f"max(losswatch_run_health{{{R}}})", legend="health"))
        .mappings(health_mapping()).thresholds(thresholds((None, "green"), (1, "orange"), (2, "red"))))
    return d


def service_dashboard() -> dash_b.Dashboard:
    d = base(SERVICE_UID, "losswatch / service", "The losswatch service itself: ingest rate, latency, errors, store.")
    d = d.variables(variables(project=False))
    d = d.with_row(dash_b.Row("Now"))
    d = d.with_panel(stat("Replicas up", q(f"sum(up{{{JOB}}})", instant=True), span=4,
                          steps=((None, "red"), (1, "green"))))
    d = d.with_panel(stat("Store up", q("min(losswatch_store_up)", instant=True), span=4,
                          mappings=[dash_m.ValueMap(options={"0": dash_m.ValueMappingResult(text="down", color="red", index=0),
                                                             "1": dash_m.ValueMappingResult(text="up", color="green", index=1)})],
                          steps=((None, "red"), (1, "green"))))
    d = d.with_panel(stat("Runs exported", q("max(losswatch_runs_exported)", instant=True), span=4))
    d = d.with_panel(stat("Records/s", q("sum(losswatch:ingest_records:rate1m)", instant=True), span=4, unit="short"))
    d = d.with_panel(stat("Ingest p99 (5 min)", q('losswatch:ingest_latency_seconds:quantile_rate5m{quantile="0.99"}',
                                                  instant=True), span=4, unit="s",
                          steps=((None, "green"), (0.25, "orange"), (1, "red"))))
    d = d.with_panel(stat("Server errors (5 min)", q("losswatch:ingest_requests:error_ratio_rate5m", instant=True),
                          span=4, unit="percentunit", steps=((None, "green"), (0.01, "orange"), (0.05, "red"))))
    d = d.with_row(dash_b.Row("Ingest"))
    d = d.with_panel(timeseries("Records ingested per second, by result",
                                q("losswatch:ingest_records:rate1m", legend="{{result}}"),
                                unit="short", stacked=True,
                                description="accepted, duplicate (a retried batch: idempotent) or rejected."))
    d = d.with_panel(timeseries("POST /steps per second, by status code",
                                q("losswatch:ingest_requests:rate1m", legend="{{code}}"),
                                unit="reqps", stacked=True))
    d = d.with_panel(timeseries("POST /steps latency",
                                q("losswatch:ingest_latency_seconds:quantile_rate5m", legend="p{{quantile}}"),
                                unit="s", description="Quantiles over all replicas, 5 min windows."))
    d = d.with_panel(timeseries("Errors",
                                q("losswatch:ingest_requests:error_ratio_rate5m", legend="5xx ratio", ref="A"),
                                q(f'sum by (code) '
                                  f'(rate(losswatch_ingest_requests_total{{code=~"4..", {JOB}}}[$__rate_interval]))',
                                  legend="{{code}}/s", ref="B"),
                                unit="short",
                                description="Server errors as a share of requests; client errors (4xx) per second."))
    d = d.with_row(dash_b.Row("Runs and actions"))
    d = d.with_panel(timeseries("Runs exported", q("max(losswatch_runs_exported)", legend="runs"), span=8))
    d = d.with_panel(timeseries("Actions applied per minute, by type",
                                q("sum by (type) (rate(losswatch_actions_applied_total[$__rate_interval])) * 60",
                                  legend="{{type}}"),
                                span=8, bars=True, description="Actions clients reported they applied (e.g. scale_lr)."))
    d = d.with_panel(timeseries("Scrape up, by replica", q(f"up{{{JOB}}}", legend="{{instance}}"), span=8))
    return d


DASHBOARDS = {"losswatch-fleet.json": fleet_dashboard, "losswatch-run.json": run_dashboard,
              "losswatch-service.json": service_dashboard}

# Prometheus annotation fields the SDK's AnnotationQuery does not model
ANNOTATION_EXTRA = {
    "losswatch alerts": {"titleFormat": "{{kind}} ({{severity}})", "tagKeys": "kind,severity",
                         "textFormat": "losswatch {{severity}} alert: {{kind}}", "step": "15s",
                         "useValueForTime": False},
    "Actions applied": {"titleFormat": "action applied: {{type}}", "tagKeys": "type", "step": "1m",
                        "useValueForTime": False},
}


def dashboard_json(builder: dash_b.Dashboard) -> dict[str, Any]:
    """The dashboard model as plain JSON data (what Grafana's API and file provisioning take)."""
    data = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for ann in data.get("annotations", {}).get("list", []):
        ann.update(ANNOTATION_EXTRA.get(ann.get("name"), {}))
    return data


# ============================================================================ Grafana alert rules


def grafana_alert_rules(rules_file: Path = ALERT_RULES) -> dict[str, Any]:
    """Grafana's file-provisioning format for the Prometheus alerting rules in ``rules_file``.

    Query A is the rule's own PromQL (it returns a series exactly when the rule holds), B reduces
    it to its last value, and the condition C is ``$B == $B``: any returned number, 0 included
    (``up == 0``), means firing; no series means OK (noDataState OK).
    """
    spec = yaml.safe_load(rules_file.read_text())
    groups = []
    for group in spec["groups"]:
        rules = []
        for r in group["rules"]:
            if "alert" not in r:
                continue
            b = (alert_b.Rule(r["alert"]).uid(_rule_uid(r["alert"])).condition("C")
                 .queries([
                     alert_b.Query("A").datasource_uid(DATASOURCE_UID)
                     .relative_time_range(_time_range(600))
                     .model(prom_b.Dataquery().expr(r["expr"].strip()).instant().ref_id("A")),
                     alert_b.Query("B").datasource_uid("__expr__")
                     .model(expr_b.TypeReduce().expression("A").reducer("last").ref_id("B")),
                     alert_b.Query("C").datasource_uid("__expr__")
                     .model(expr_b.TypeMath().expression("$B == $B").ref_id("C")),
                 ])
                 .no_data_state("OK").exec_err_state("Error").for_val(r.get("for", "0s"))
                 .labels(dict(r.get("labels", {})))
                 .annotations({k: _grafana_template(v) for k, v in r.get("annotations", {}).items()}))
            rule = json.loads(json.dumps(b.build(), cls=JSONEncoder))
            rules.append({k: rule[k] for k in ("uid", "title", "condition", "data", "noDataState", "execErrState",
                                               "for", "annotations", "labels") if k in rule})
        groups.append({"orgId": 1, "name": group["name"], "folder": FOLDER_TITLE, "interval": "1m", "rules": rules})
    return {"apiVersion": 1, "groups": groups}


def _rule_uid(name: str) -> str:
    # Grafana uids: at most 40 characters of [a-zA-Z0-9-_]
    return ("lw-" + "".join(c if c.isalnum() else "-" for c in name.lower()))[:40]


def _time_range(seconds: int) -> Any:
    from grafana_foundation_sdk.models import alerting as alerting_m

    return alerting_m.RelativeTimeRange(from_val=seconds, to=0)


def _grafana_template(text: str) -> str:
    """Prometheus' ``$value`` is Grafana's ``$values.B.Value`` (the reduced query A)."""
    return text.replace("$value ", "$values.B.Value ").replace("$value}", "$values.B.Value}")


# ============================================================================ writing


def rendered(root: Path = HERE) -> dict[Path, str]:
    """Every generated file under ``root`` (the dashboards/ folder) -> its exact content."""
    out: dict[Path, str] = {}
    for name, fn in DASHBOARDS.items():
        out[root / "generated" / name] = json.dumps(dashboard_json(fn()), indent=2, sort_keys=True) + "\n"
    alerts = ("# Generated by `losswatch dashboards generate` from dashboards/prometheus/alerts.rules.yml.\n"
              "# Do not edit: edit the Prometheus rules and regenerate.\n"
              + yaml.dump(grafana_alert_rules(), Dumper=_BlockDumper, sort_keys=False, width=200))
    out[root / "grafana" / "provisioning" / "alerting" / "losswatch-alerts.yml"] = alerts
    return out


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the generated YAML reads like the source."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def generate(root: Path = HERE) -> list[Path]:
    """Write the generated files under ``root``; the paths written."""
    written = []
    for path, text in rendered(root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(root: Path = HERE) -> list[Path]:
    """Generated files under ``root`` that differ from what the code renders now."""
    return [p for p, text in rendered(root).items() if not p.exists() or p.read_text(encoding="utf-8") != text]


if __name__ == "__main__":
    # one implementation of generate / --check: the CLI's (`losswatch dashboards generate`)
    from losswatch.service.cli import main

    sys.exit(main(["dashboards", "generate", *sys.argv[1:]]))
