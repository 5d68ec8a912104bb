"""BestEffort (tenacity underneath): an outage is retried with doubling waits, then skipped, and
calls are skipped for `pause` seconds after; anything else is raised at once. A fake clock and
fake sleeps make the waits exact."""

from __future__ import annotations

import time

import pytest
import requests
from mlflow.exceptions import MlflowException

from orchestrator.tracking.client import BestEffort, TrackingError, TrackingStoreError


@pytest.fixture
def clock(monkeypatch):
    """time.monotonic under the test's control; time.sleep records its waits and moves the clock."""
    now, slept = [1000.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", sleep)
    return now, slept


class Store:
    def __init__(self, outages: int = 0):
        self.outages, self.calls = outages, 0

    def log_metrics(self, run_id, metrics):
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise requests.ConnectionError("connection refused")
        return "logged"


def test_an_outage_is_retried_with_doubling_waits_then_skipped_and_the_store_rested(clock):
    now, slept = clock
    store = Store(outages=10)
    tracker = BestEffort(lambda: store, attempts=3, wait=0.5, pause=30)
    assert tracker.log_metrics("run", {"f1": 1.0}) is None
    assert (store.calls, slept, tracker.failures) == (3, [0.5, 1.0], 1)  # no wait after the last try
    now[0] += 29
    assert tracker.log_metrics("run", {}) is None  # within the pause: not even tried
    assert (store.calls, tracker.failures) == (3, 2)
    now[0] += 2
    store.outages = 0
    assert tracker.log_metrics("run", {}) == "logged"  # the pause is over: the store is asked again
    assert (store.calls, tracker.failures) == (4, 2)


def test_a_call_that_succeeds_on_a_retry_returns_its_value(clock):
    _, slept = clock
    store = Store(outages=2)
    tracker = BestEffort(lambda: store, attempts=3, wait=1.0)
    assert tracker.log_metrics("run", {}) == "logged"
    assert (store.calls, slept, tracker.failures) == (3, [1.0, 2.0], 0)


def test_a_store_that_cannot_be_opened_is_retried_only_when_it_is_down(clock):
    _, slept = clock
    opened = []

    def down():
        opened.append(1)
        raise TrackingError("cannot use the store") from requests.ConnectionError("refused")

    assert BestEffort(down, attempts=2, wait=1.0).log_metrics("run", {}) is None
    assert len(opened) == 2 and slept == [1.0]
    opened.clear()

    def refused():
        opened.append(1)
        raise TrackingError("not an MLflow store") from MlflowException("bad", error_code=1000)

    with pytest.raises(TrackingError, match="not an MLflow store"):
        BestEffort(refused, attempts=3).log_metrics("run", {})
    assert len(opened) == 1  # raised at once, never retried


def test_a_refused_request_is_raised_at_once(clock):
    _, slept = clock

    class Refusing:
        def set_tags(self, *a):
            raise TrackingStoreError("bad tag", error_code=1000)  # INVALID_PARAMETER_VALUE

    with pytest.raises(MlflowException, match="bad tag"):
        BestEffort(Refusing, attempts=3).set_tags("run", {})
    assert slept == []


def test_the_store_error_alias_is_mlflows():
    assert TrackingStoreError is MlflowException
