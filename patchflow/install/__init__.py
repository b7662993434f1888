"""Select and install: the Patch Install view, EULAs, install jobs and their items.

Modules, by who calls them:
- selection, eula, jobs: the CLI (`install`, `eula`, `jobs`) and the admin API.
- dispatch: the Prefect `install` flow's steps (resolve, content, dispatch, sweep, finish).
- agent_jobs: the agent API's job poll and result routes (via patchflow.fleet.jobs).
- auto: jobs created by scheduled scans of auto-install policies.
- states, installers: the pure rules (state machine, exit codes, which installer).
- approvals, approval_rules, approval_policy: what may be installed (approvals and declines,
  automatic rules, a policy's approved set), read by selection, auto and the patch cycle.

Every function takes or opens its own session and leaves entry points (CLI, API, flow) thin,
so a rule holds whichever door a request came through.
"""

from patchflow.install.eula import accept_eula, patch_label, refuse_unaccepted, show_eula
from patchflow.install.jobs import (
    cancel_job,
    create_job,
    install_now,
    list_jobs,
    show_job,
    start_from_selection,
)
from patchflow.install.selection import (
    install_list,
    install_show,
    refresh_selection,
    resolve_patch,
    select_pairs,
    selection_rows,
    unselect_pairs,
)
from patchflow.install.settings import InstallSettings

__all__ = [
    "InstallSettings",
    "accept_eula",
    "cancel_job",
    "create_job",
    "install_list",
    "install_now",
    "install_show",
    "list_jobs",
    "patch_label",
    "refresh_selection",
    "refuse_unaccepted",
    "resolve_patch",
    "select_pairs",
    "selection_rows",
    "show_eula",
    "show_job",
    "start_from_selection",
    "unselect_pairs",
]
