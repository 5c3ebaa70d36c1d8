"""The README's layout section names what is in the tree: every package of ``allot`` and every
module of the packages it describes module by module; and no top-level module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOT = ROOT / "allot"
DESCRIBED_BY_MODULE = ("cycle", "inspect", "work", "zk")


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def entries(block: str, package: str) -> str:
    """The text of ``package/``'s entry: its line and the indented lines that continue it."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {package}/"))
    taken = [lines[start]]
    for line in lines[start + 1 :]:
        if re.match(r"^  \S", line) or re.match(r"^\S", line):
            break
        taken.append(line)
    return "\n".join(taken)


def test_every_package_of_allot_is_in_the_layout() -> None:
    block = layout_block()
    packages = sorted(path.name for path in ALLOT.iterdir() if (path / "__init__.py").is_file())
    missing = [name for name in packages if f"  {name}/" not in block]
    assert missing == [], f"README's layout does not name allot/{missing}"


def test_no_module_at_the_top_of_allot_is_missing_or_gone() -> None:
    block = layout_block()
    allot_part = block.split("\nmodels/", 1)[0]
    left_column = "\n".join(line[:39] for line in allot_part.splitlines())
    named = set(re.findall(r"\b(\w+)\.py\b", left_column))
    present = {
        path.stem for path in ALLOT.glob("*.py") if path.stem not in {"__init__", "__main__"}
    }
    assert named - present == set(), "README's layout names modules that are gone"
    assert present - named == set(), "README's layout does not name these modules of allot/"


@pytest.mark.parametrize("package", DESCRIBED_BY_MODULE)
def test_every_module_of_a_package_is_named_in_its_entry(package: str) -> None:
    entry = entries(layout_block(), package)
    modules = sorted(
        path.stem for path in (ALLOT / package).glob("*.py") if path.stem != "__init__"
    )
    missing = [name for name in modules if not re.search(rf"\b{name}\b", entry)]
    assert missing == [], f"README's layout entry for allot/{package}/ misses {missing}"
