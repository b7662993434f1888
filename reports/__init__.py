"""Pure report builders: pandas DataFrames in, report tables and HTML/CSV text out.

Nothing in this package opens a database session, a file or a socket: `patchflow.missing_query`
and `patchflow.report_data` load the frames, `patchflow.reporting` writes and mails them. That
split is what lets the benchmark and the tests call the builders on synthetic frames.
"""
