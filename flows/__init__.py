"""Prefect flows composing the tasks: sync, scan, install, report, patch cycle."""
