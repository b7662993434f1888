"""The `patchflow` command (typer + rich)."""
