"""The structure a newcomer relies on stays true: imports point one way, the domain core is
pure, the worker does not import the CLI, workflows and the domain read no clock, and no
module of the product grows past what one can read in a sitting.

The layer contract itself is import-linter's, configured in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["billing", "store", "services", "activities", "workflows", "config", "starter"]
MAX_MODULE_LINES = 500
# Sources of time and randomness a deterministic workflow or a pure rule must not read.
NONDETERMINISTIC_CALLS = {"now", "utcnow", "today", "time", "uuid1", "uuid4", "random", "randint"}
# Modules that read the clock, randomness, files, the network or the database. The worker
# runs workflows unsandboxed by default (worker.workflow_runner), so this check, not the
# SDK's sandbox, keeps them out of workflow code and of the domain core it calls.
NONDETERMINISTIC_MODULES = {
    "os",
    "time",
    "random",
    "secrets",
    "socket",
    "ssl",
    "select",
    "threading",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "urllib",
    "http",
    "httpx",
    "requests",
    "sqlalchemy",
    "psycopg",
    "sqlite3",
    "store",
    "services",
    "config",
    "starter",
}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(*packages: str) -> list[Path]:
    return sorted(
        path
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def test_the_import_contract_holds() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is part of the test extra"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contract_names_every_package_of_the_product() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for package in PRODUCT:
        assert f'"{package}"' in text.split("[tool.importlinter]")[1].split("[tool.ruff]")[0]


def test_the_worker_does_not_import_the_cli() -> None:
    imported = _imported_modules(ROOT / "worker.py")
    assert not {name for name in imported if name.split(".")[0] == "starter"}


def _nondeterministic_calls(path: Path) -> set[str]:
    """Calls such as ``datetime.now()`` or ``uuid4()``; ``workflow.now()`` is deterministic."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in NONDETERMINISTIC_CALLS:
            if not (isinstance(func.value, ast.Name) and func.value.id == "workflow"):
                found.add(ast.unparse(func))
        elif isinstance(func, ast.Name) and func.id in NONDETERMINISTIC_CALLS:
            found.add(func.id)
    return found


@pytest.mark.parametrize("path", _sources("billing", "workflows"), ids=str)
def test_no_clock_or_randomness_in_the_domain_or_workflows(path: Path) -> None:
    found = _nondeterministic_calls(path)
    assert not found, f"{path.relative_to(ROOT)} calls {sorted(found)}"


@pytest.mark.parametrize("path", _sources("billing", "workflows"), ids=str)
def test_no_io_clock_or_randomness_module_in_the_domain_or_workflows(path: Path) -> None:
    imported = {name.split(".")[0] for name in _imported_modules(path)}
    found = imported & NONDETERMINISTIC_MODULES
    assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"


def test_the_module_check_sees_an_io_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom sqlalchemy import text\nfrom datetime import datetime\n")
    imported = {name.split(".")[0] for name in _imported_modules(sample)}
    assert imported & NONDETERMINISTIC_MODULES == {"time", "sqlalchemy"}


def test_the_clock_check_sees_a_clock(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import datetime\nstamp = datetime.datetime.now()\nok = workflow.now()\n")
    assert _nondeterministic_calls(sample) == {"datetime.datetime.now"}


@pytest.mark.parametrize("path", [*_sources(*PRODUCT), ROOT / "worker.py"], ids=str)
def test_modules_stay_readable(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"
