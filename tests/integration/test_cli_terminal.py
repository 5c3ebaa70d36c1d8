"""What a person at a terminal sees: a progress bar on bulk registration, `make run`'s summary."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from tests.cli import allot

ROOT = Path(__file__).resolve().parents[2]


def run_in_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run ``args`` with standard output on a pseudo-terminal and return all it wrote."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        args, stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, env=env
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert process.wait(timeout=120) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


def test_bulk_registration_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
    env |= {"ALLOT_DATABASE_URL": f"sqlite:///{tmp_path / 'allot.db'}", "COLUMNS": "100"}
    assert allot("db", "upgrade", env=env).returncode == 0
    listing = tmp_path / "names.txt"
    listing.write_text("\n".join(f"c.d.t{i}" for i in range(3000)))

    command = [sys.executable, "-m", "allot", "tables", "register", "--file", str(listing)]
    on_terminal = run_in_terminal([*command, "--batch-size", "100"], env)
    piped = allot("tables", "register", "--file", str(listing), env=env)

    assert "registering" in on_terminal
    assert "/3000" in on_terminal
    assert "3,000 table(s) registered" in on_terminal
    assert "registering" not in piped.stdout
    assert "3,000 already registered" in piped.stdout


def setup_only(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``scripts/run.sh --setup-only`` with ``env``."""
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "run.sh"), "--setup-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_run_sets_up_the_database_and_says_what_to_try(tmp_path: Path) -> None:
    """``scripts/run.sh --setup-only`` does all of make run's set-up and starts nothing.

    The whole cluster (ZooKeeper, Redis, nodes, beat, Flower, Ctrl-C) is tests/e2e/test_make_run.py.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLOT_", "FLOWER_"))}
    env["ALLOT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'run.db'}"
    env["VAR_DIR"] = str(tmp_path / "var")
    result = setup_only(env)
    assert result.returncode == 0, result.stderr
    assert "schema upgraded from empty to" in result.stdout
    assert "1,000 table(s) registered" in result.stdout
    assert "nothing started" in result.stdout
    credentials = (tmp_path / "var" / "flower" / "basic-auth").read_text().strip()
    assert credentials.startswith("admin:")
    assert f"user:password {credentials}" in result.stdout
    assert (tmp_path / "var" / "flower" / "basic-auth").stat().st_mode & 0o077 == 0
    for command in ("allot status", "allot rebalance --dry-run", "FROM table_assignment"):
        assert command in result.stdout
    assert (tmp_path / "run.db").exists()

    again = setup_only(env)
    assert again.returncode == 0, again.stderr
    assert "1,000 already registered" in again.stdout
    assert f"user:password {credentials}" in again.stdout
