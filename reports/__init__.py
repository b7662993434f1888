"""Pure report builders: pandas DataFrames in, report tables and HTML/CSV text out.

Nothing in this package opens a database session, a file or a socket:
`patchflow.scanning.missing_query` and `patchflow.reporting.report_data` load the frames,
`patchflow.reporting.service` writes and mails them. That split is what lets the benchmark and the
tests call the builders on synthetic frames.
"""
