"""Process liveness on this host, as the membership takeover rule sees it (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from allot.zk.codec import now_ms
from allot.zk.process import pid_running, process_started_ms


def test_this_process_runs_and_started_in_the_past() -> None:
    assert pid_running(os.getpid())
    started = process_started_ms(os.getpid())
    assert started is not None
    assert started <= now_ms() + 1_000


def test_a_newer_process_has_a_later_start_time() -> None:
    # Given a time taken before a child starts (start times are exact to about one second)
    before = now_ms()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # Then the child runs and its start time tells it from this older process
        assert pid_running(child.pid)
        started = process_started_ms(child.pid)
        assert started is not None
        assert before - 1_000 <= started <= now_ms() + 1_000
        assert started >= (process_started_ms(os.getpid()) or 0)
    finally:
        child.kill()
        child.wait()


def test_a_reaped_process_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_running(child.pid)
    assert process_started_ms(child.pid) is None


def test_a_zombie_is_not_running() -> None:
    # Given a child that exited but was not reaped yet (a zombie keeps its pid)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # it exited; not reaped
    try:
        os.kill(child.pid, 0)  # the pid still exists...
        assert not pid_running(child.pid)  # ...but a zombie does not run
    finally:
        child.wait()


def test_pids_zero_and_negative_are_not_processes() -> None:
    assert not pid_running(0)
    assert not pid_running(-5)
