"""Grafana dashboards and Prometheus rules as code, and their generated files.

- ``build.py``: the dashboards (fleet, run, service) and the Grafana alert rules, built with
  grafana-foundation-sdk; ``losswatch dashboards generate`` writes ``generated/*.json`` and
  ``grafana/provisioning/alerting/losswatch-alerts.yml`` (committed; a test fails when stale).
- ``prometheus/``: alerting and recording rules, with their ``promtool test rules`` unit tests.
- ``grafana/provisioning/``: datasource, dashboard provider and alert rules for Grafana.

Nothing here is imported at run time by the service or the client.
"""
