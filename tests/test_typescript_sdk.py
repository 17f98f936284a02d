"""The TypeScript SDK (sdk/typescript): its build, type test and Node test suite, as part of `pytest`.

The suite itself (packages/bastion-sdk/test, Node's test runner) starts its own Bastion through
tests/sdk_stack.py; this runs it with this interpreter, after `npm ci` and the build when they are due.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[1] / "sdk" / "typescript"


def npm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["npm", *args], cwd=SDK, capture_output=True, text=True, timeout=timeout, env=env)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    output = f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"npm {result.args[1:]} failed:\n{output}"


@pytest.fixture(scope="module")
def built() -> None:
    if shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (the SDK needs Node 18+)")
    lock = SDK / "package-lock.json"
    installed = SDK / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        ok(npm("ci", "--no-audit", "--no-fund"))
    ok(npm("run", "build"))


def test_the_sdk_type_checks(built: None) -> None:
    ok(npm("run", "typecheck"))


def test_the_sdk_suite_passes_against_a_real_bastion(built: None) -> None:
    result = npm("test", timeout=900)
    ok(result)
    assert "# fail 0" in result.stdout and "# pass" in result.stdout
