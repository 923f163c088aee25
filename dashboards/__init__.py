"""Grafana dashboards and Prometheus rules as code, and their generated files."""
