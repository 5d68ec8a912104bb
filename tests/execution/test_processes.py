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


def test_a_spare_runs_the_next_job_and_the_next_spare_starts_at_once(tmp_path, monkeypatch):
    """The spare here is a small script in place of the real worker (whose imports take seconds):
    it reads its job from stdin as `worker --wait` does and prints what it got."""
    import orchestrator.execution.processes as processes

    script = tmp_path / "spare.py"
    script.write_text("import os, sys\nline = sys.stdin.readline()\nif not line:\n    sys.exit(0)\n"
                      "print('ran', line.strip().replace('\\t', ' '), os.getpid())\n")
    monkeypatch.setattr(processes, "spare_command", lambda: [sys.executable, str(script)])
    monkeypatch.setattr(processes, "command", lambda slot, job, result: [sys.executable, "-c", "print('cold')"])
    slot, spares = make_slots("none", available=[])[0], processes.Spares()
    first = run_child(slot, tmp_path / "a.json", tmp_path / "a.out", tmp_path / "a.log", print, spares=spares)
    assert first.returncode == 0 and (tmp_path / "a.log").read_text() == "cold\n"  # no spare yet: a cold start
    waiting = spares._idle[slot.name]
    second = run_child(slot, tmp_path / "b.json", tmp_path / "b.out", tmp_path / "b.log", print, spares=spares)
    assert second.returncode == 0
    assert (tmp_path / "b.log").read_text() == f"ran {tmp_path / 'b.json'} {tmp_path / 'b.out'} {waiting.pid}\n"
    idle = spares._idle[slot.name]
    assert idle is not waiting and idle.poll() is None  # the third trial's process is already up
    # The budget's last trial: it runs in the spare, and no process is started after it.
    last = run_child(slot, tmp_path / "c.json", tmp_path / "c.out", tmp_path / "c.log", print, spares=spares,
                     start_next=False)
    assert last.returncode == 0 and f"{idle.pid}" in (tmp_path / "c.log").read_text() and not spares._idle
    spares.start(slot, None)
    idle = spares._idle[slot.name]
    spares.close()
    assert idle.wait(timeout=5) == 0 and not spares._idle  # end-of-file: it exits on its own


def test_a_spare_that_died_while_idle_costs_only_a_cold_start(tmp_path, monkeypatch):
    import orchestrator.execution.processes as processes

    monkeypatch.setattr(processes, "spare_command", lambda: [sys.executable, "-c", "pass"])
    monkeypatch.setattr(processes, "command", lambda slot, job, result: [sys.executable, "-c", "print('cold')"])
    slot, spares = make_slots("none", available=[])[0], processes.Spares()
    spares.start(slot, None)
    spares._idle[slot.name].wait(timeout=10)  # it is gone before its job comes
    outcome = run_child(slot, tmp_path / "a.json", tmp_path / "a.out", tmp_path / "a.log", print, spares=spares)
    assert outcome.returncode == 0 and (tmp_path / "a.log").read_text() == "cold\n"
    spares.close()


def test_a_question_is_answered_by_its_number_even_when_the_driver_fails_on_it(tmp_path, monkeypatch):
    """The child asks twice, as a trial asks after each epoch. The driver's handler raises on the
    first question (its storage was busy): the child still gets an answer, an empty one, and the
    second question gets the driver's real answer, named by its number."""
    import orchestrator.execution.processes as processes

    script = tmp_path / "child.py"
    script.write_text("from orchestrator.execution.job import ask\n"
                      "print('first', ask({'type': 'eval', 'trial': 0, 'epoch': 1}, wait=30))\n"
                      "print('second', ask({'type': 'eval', 'trial': 0, 'epoch': 2}, wait=30))\n")
    monkeypatch.setattr(processes, "command", lambda slot, job, result: [sys.executable, str(script)])

    def driver(event):
        if event["epoch"] == 1:
            raise RuntimeError("database is locked")
        return {"prune": True}

    outcome = run_child(make_slots("none", available=[])[0], tmp_path / "j.json", tmp_path / "r.json",
                        tmp_path / "t.log", driver)
    assert outcome.returncode == 0, (tmp_path / "t.log").read_text()
    assert (tmp_path / "t.log").read_text() == "first {}\nsecond {'prune': True}\n"


def test_a_late_answer_is_never_taken_for_the_next_question():
    from orchestrator.execution.ray import Mailbox

    box = Mailbox()
    box.post(7, 1, {"prune": False})  # came after the trial stopped waiting for question 1
    box.post(7, 2, {"keep": True})
    assert box.take(7, 2) == {"keep": True} and box.take(7, 1) is None and box.take(8, 1) is None
