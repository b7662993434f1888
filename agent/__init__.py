"""The endpoint agent (`patchflow-agent`): enrolls with a pinned server certificate, reports the
machine's inventory, polls for jobs and reports their results."""
