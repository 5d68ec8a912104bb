"""Trial processes: exit reasons, events and logs of a child, stopping every running trial."""

import signal
import subprocess
import sys
import time

from orchestrator.execution.processes import Children, exit_reason, run_child
from orchestrator.execution.slots import make_slots


def test_exit_reasons_name_the_signal():
    assert exit_reason(0) is None
    assert "SIGKILL" in exit_reason(-signal.SIGKILL) and "OOM-killer" in exit_reason(-signal.SIGKILL)
    assert exit_reason(-signal.SIGSEGV) == "trial process killed by SIGSEGV"
    assert exit_reason(3) == "trial process exited with code 3"


def test_run_child_forwards_events_and_keeps_the_rest_in_the_log(tmp_path, monkeypatch):
    import orchestrator.execution.processes as processes

    script = tmp_path / "child.py"
    script.write_text("import sys\nprint('hello log')\nprint('@@orchestrator {\"type\": \"eval\", \"trial\": 1}')\n"
                      "sys.exit(3)\n")
    monkeypatch.setattr(processes, "command", lambda slot, job, result: [sys.executable, str(script)])
    events = []
    outcome = run_child(make_slots("none", available=[])[0], tmp_path / "job.json", tmp_path / "r.json",
                        tmp_path / "t.log", events.append)
    assert events == [{"type": "eval", "trial": 1}]
    assert (tmp_path / "t.log").read_text() == "hello log\n"
    assert outcome.returncode == 3 and "exited with code 3" in outcome.reason and "hello log" in outcome.reason


class _Remote:
    """A trial running elsewhere, as `Children` sees it (the Ray executor's handle has this shape)."""

    def __init__(self, ends: bool):
        self.ends, self.calls = ends, []

    def terminate(self):
        self.calls.append("terminate")

    def wait(self, timeout):
        self.calls.append("wait")
        return self.ends

    def kill(self):
        self.calls.append("kill")


def test_terminate_all_stops_child_process_groups_and_remote_trials():
    children = Children()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    polite, stubborn = _Remote(ends=True), _Remote(ends=False)
    for handle in (proc, polite, stubborn):
        children.add(handle)
    assert len(children) == 3
    started = time.monotonic()
    children.terminate_all(grace=5)
    assert proc.wait(timeout=5) == -signal.SIGTERM and time.monotonic() - started < 5
    assert polite.calls == ["terminate", "wait"]
    assert stubborn.calls == ["terminate", "wait", "kill"]  # not ended within the grace: killed
