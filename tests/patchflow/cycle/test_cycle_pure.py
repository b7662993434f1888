"""The cycle's pure parts: the ring gate, ring membership, and the step markdown, which
carries text from agents and upstreams and must not break out of its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchflow.cycle.report import markdown, run_summary
from patchflow.cycle.rings import RingSpec, gate, ring_of


def test_gate_passes_at_the_rate_and_halts_below_it() -> None:
    assert gate("pilot", {"succeeded": 19, "failed": 1}, 95) == (
        True, "ring pilot: 19 of 20 installs succeeded (95 %), gate 95 % passed")
    passed, reason = gate("pilot", {"succeeded": 18, "reboot pending": 0, "failed": 2}, 95)
    assert not passed and reason.endswith("below the gate's 95 %: cycle halted")
    assert gate("pilot", {"succeeded": 1, "reboot pending": 1}, 100)[0]  # reboot pending counts
    assert gate("pilot", {}, 95) == (True, "ring pilot had nothing to install")


def test_an_endpoint_belongs_to_the_first_ring_naming_its_group_chain() -> None:
    rings = [RingSpec("pilot", frozenset({1})), RingSpec("broad", frozenset({2, 1}))]
    assert ring_of({1, 5}, rings) == "pilot"
    assert ring_of({2}, rings) == "broad"
    assert ring_of({9}, rings) is None


def test_markdown_cells_cannot_break_the_table() -> None:
    text = markdown("t", "s", ["Reason"], [["a | b\n<script>\x1b[2J"]])
    row = text.splitlines()[-1]
    assert row == "| a \\| b &lt;script>[2J |"  # ESC dropped, the rest is plain text


def test_run_summary_per_ring() -> None:
    plan = [{"ring": "pilot", "patch": "KB1", "endpoints": ["A"]},
            {"ring": "broad", "patch": "KB1", "endpoints": ["B", "C"]}]
    out = run_summary("P", False, plan, [
        {"ring": "pilot", "install": {"succeeded": 1}, "flagged": [{"x": 1}], "note": None},
        {"ring": "broad", "install": None, "note": "ring pilot: … cycle halted",
         "halted": True}])
    assert [(r["ring"], r["approved_pairs"], r["installed"], r["still_missing"])
            for r in out["rings"]] == [("pilot", 1, 1, 1), ("broad", 2, 0, 0)]
    assert out["text"] == ("policy P: 1 patch(es) approved for 3 install(s); 1 installed, "
                           "0 failed, 0 pending reboot, 1 installed but still missing; "
                           "halted before ring broad")


def test_cycle_settings_out_of_range_are_one_line_config_errors(sqlite_home: Path) -> None:
    from patchflow import config
    from tasks.cycle import setting

    assert setting("verify_wait_s") == 300.0 and setting("verify_poll_s") == 2.0
    config.write_config({"cycle": {"verify_poll_s": 0.2, "sync_max_age_hours": 0}})
    assert setting("verify_poll_s") == 0.2 and setting("sync_max_age_hours") == 0.0
    for value, shown in (("soon", "'soon'"), (-5, "-5"), (True, "True")):
        config.write_config({"cycle": {"verify_wait_s": value}})
        with pytest.raises(config.ConfigError) as raised:
            setting("verify_wait_s")
        assert str(raised.value) == (
            f"[cycle] verify_wait_s must be a number between 0 and 86400, not {shown}")
