"""Owner-only files: everything patchflow writes in its home is private to the service account.

The home holds the database (agent secret hashes, admin password hashes, the inventory),
Prefect's database and logs (flow parameters, error messages), reports and backups. Under the
usual umask 022 each of those would be world-readable, so the process entry points set umask
077 once (the cause, not each file: the SQLite journal, Prefect's temporary server, pandas'
CSV writer and every future file inherit it), and `patchflow init` takes group and other access
away from what an older version (or a copy) left readable.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Set the owner-only umask for this process and the processes it starts; the old one."""
    return os.umask(PRIVATE_UMASK)


def make_private(root: Path) -> tuple[int, int]:
    """Remove group and other access from `root` and everything under it.

    Symbolic links are neither followed nor changed (their own mode means nothing on Linux, and
    what they point at is not ours to change). Returns (entries changed, entries that could not
    be changed, e.g. owned by another account)."""
    changed = failed = 0
    if not root.is_dir() or root.is_symlink():
        return changed, failed
    for folder, _dirs, files in os.walk(root, followlinks=False):
        # Each folder is changed as its own `folder`; a link to a folder, listed in `_dirs`
        # and never walked, is left alone like any link.
        for path in [Path(folder)] + [Path(folder) / n for n in files]:
            try:
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode) or not mode & 0o077:
                    continue
                path.chmod(stat.S_IMODE(mode) & ~0o077)
                changed += 1
            except OSError:
                failed += 1
    return changed, failed
