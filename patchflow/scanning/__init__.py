"""Scanning: which patches each endpoint is missing, and the one query every view reads that from.

`service` selects endpoints and runs scans (the flow's steps and the fast path for one
inventory), `scan_store` moves frames between the database and the applicability engine, and
`missing_query` is the single "missing patches" query, so a report, the CLI and the console agree.
"""
