"""Headless Chromium for the end-to-end tests that look at a page (Debian's ``chromium``,
installed by ``make test``)."""

from __future__ import annotations

import secrets
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 900)


def chromium(url: str, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url`` with a throw-away profile; ``mode`` is --dump-dom or
    --screenshot=FILE. The virtual time budget lets the page's scripts fill the task table."""
    binary = shutil.which("chromium") or CHROMIUM
    if not Path(binary).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    profile = tmp_path / f"chromium-profile-{secrets.token_hex(4)}"
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000", *mode, url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height
