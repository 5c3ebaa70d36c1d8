"""allot's companion packages (``models``, ``migrations``, ``tasks``) are installed beside it
under plain names; a foreign package with one of those names earlier on the path is refused at
``import allot`` with one clear line, instead of failing somewhere inside the SQL layer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import allot


@pytest.mark.parametrize("name", allot.COMPANIONS)
def test_a_foreign_package_shadowing_a_companion_is_refused(name: str, tmp_path: Path) -> None:
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    result = subprocess.run(
        [sys.executable, "-c", "import allot"],
        cwd=tmp_path,  # `python -c` puts the working directory first on the path
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: allot's package '{name}' is shadowed by {tmp_path}")


def test_allot_imports_from_a_directory_without_such_packages(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import allot, models, tasks; print(models.__name__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
