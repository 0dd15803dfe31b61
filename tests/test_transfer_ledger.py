"""Ledger: one atomic JSON per cell; statuses; a failed write never leaves a torn entry."""
from __future__ import annotations

import json
import os

import pytest

from transfer import ledger as ledger_mod
from transfer.ledger import Ledger, LedgerError, stable_view

CELL = {"protocol": "linear", "init": "random", "split": 1, "seed": 0}


def test_lifecycle_and_summary(tmp_path):
    led = Ledger(tmp_path)
    assert led.status("a") == "pending"
    led.mark_running("a", CELL)
    assert led.status("a") == "running"
    led.mark_done("a", CELL, {"video_acc": 0.5}, elapsed_s=1.0)
    led.mark_failed("b", CELL, "ValueError: boom")
    entry = led.read("a")
    assert entry["result"] == {"video_acc": 0.5} and entry["run"]["elapsed_s"] == 1.0
    summary = led.summary(["a", "b", "c"])
    assert summary["done"] == ["a"] and summary["failed"] == ["b"] and summary["pending"] == ["c"]
    assert [e["cell_id"] for e in led.entries() if e["status"] == "done"] == ["a"]


def test_running_entry_of_a_dead_process_reads_interrupted(tmp_path):
    led = Ledger(tmp_path)
    led.mark_running("a", CELL)
    raw = json.loads(led.path("a").read_text())
    raw["run"]["pid"] = 2**22 + 12345  # above the default pid_max: no such process
    led.path("a").write_text(json.dumps(raw))
    assert led.summary(["a"])["interrupted"] == ["a"]
    assert led.summary(["a"], queue={"a": "PENDING"})["pending"] == ["a"]


def test_stable_view_drops_run_info(tmp_path):
    a, b = Ledger(tmp_path / "a"), Ledger(tmp_path / "b")
    a.mark_done("x", CELL, {"v": 1}, elapsed_s=1.0)
    b.mark_done("x", CELL, {"v": 1}, elapsed_s=99.0)
    assert stable_view(a.read("x")) == stable_view(b.read("x"))
    assert a.read("x") != b.read("x")


def test_write_failure_keeps_previous_entry(tmp_path, monkeypatch):
    led = Ledger(tmp_path)
    led.mark_running("a", CELL)

    import runkit.atomic as atomic

    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        led.mark_done("a", CELL, {"video_acc": 1.0})
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert led.status("a") == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_corrupt_entry_names_the_file(tmp_path):
    led = Ledger(tmp_path)
    led.path("a").parent.mkdir(parents=True, exist_ok=True)
    led.path("a").write_text("{not json")
    with pytest.raises(LedgerError, match="a.json"):
        led.read("a")
    with pytest.raises(ValueError):
        led.path("../evil")
