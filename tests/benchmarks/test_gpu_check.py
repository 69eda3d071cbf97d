"""benchmarks.gpu_check: the budget, the commands and the report (the parts themselves are the
benchmarks' own, tested with them; the whole check runs by hand, see docs/benchmarks.md)."""

import sys
from pathlib import Path

from benchmarks import gpu_check


def test_a_part_gets_its_cap_or_what_the_budget_has_left():
    part = gpu_check.PARTS[0]
    assert gpu_check.plan(part, budget_s=450, elapsed_s=0) == part.cap_s
    assert gpu_check.plan(part, budget_s=450, elapsed_s=420) == 30
    assert gpu_check.plan(part, budget_s=450, elapsed_s=500) == 0


def test_every_part_has_a_smoke_command_with_the_same_module():
    """The smoke run exercises the same benchmark as the full one, at tiny shapes, and the
    commands fill in the output folder and the PyTorch device."""
    names = [p.name for p in gpu_check.PARTS]
    assert len(set(names)) == len(names)
    for part in gpu_check.PARTS:
        full = gpu_check.part_command(part, Path("/o"), smoke=False, torch_device="cuda")
        smoke = gpu_check.part_command(part, Path("/o"), smoke=True, torch_device="cpu")
        assert full[:3] == [sys.executable, "-m", part.args[0]] and smoke[2] == full[2]
        assert not any("{" in a for a in full + smoke)
        assert ("--device=cuda" in full) == ("--device=cpu" in smoke)


def test_a_timed_out_part_is_stopped_and_reported(tmp_path, monkeypatch):
    """A part over its time is killed with its process group and recorded as timed_out; the
    report names every part's status."""
    sleeper = gpu_check.Part("sleeper", ("time",), ("time",), 1.0)
    monkeypatch.setattr(gpu_check, "part_command", lambda *a, **k: [
        sys.executable, "-c", "import time; time.sleep(30)"])
    record = gpu_check.run_part(sleeper, tmp_path / "sleeper", 0.5, smoke=True,
                                torch_device="cpu", env={})
    assert record["status"] == "timed_out" and record["seconds"] < 10
    skipped = gpu_check.run_part(sleeper, tmp_path / "skipped", 0.0, smoke=True,
                                 torch_device="cpu", env={})
    assert skipped["status"] == "skipped"
    report = {"command": "python -m benchmarks.gpu_check", "smoke": True, "torch_device": "cpu",
              "budget_s": 1.0, "elapsed_s": 0.5,
              "parts": {"sleeper": record, "skipped": skipped}}
    text = gpu_check.format_report(report)
    assert "| sleeper | timed_out |" in text and "| skipped | skipped |" in text
