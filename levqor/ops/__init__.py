"""Metrics, health, SLO watchdog, anomaly detection, alerts, backups, reports."""
