"""The patch cycle (`patchflow-cycle` flow): sync → scan → approve → install → verify → report.

Modules, by job:
- plan: the policy's endpoints, their missing pairs and the approved set → the install plan.
- runs: the cycle_runs records (start, one at a time per policy, steps, finish, list, show).
- verify: after the rescan, which installs "succeeded" but are still missing, and why.
- report: markdown and tables for each step's artifact and the run's summary (pure).
The Prefect side is flows/cycle.py and tasks/cycle.py; the CLI is cli/cycle.py.
"""
