"""How long the CLI takes to start and answer: `bastion --version`, `bastion --help`, and `bastion keys
list` on an embedded SQLite database holding a few keys, each a fresh process, the median of `runs`.

Beside them, the floor they cannot go under: Python starting and exiting (`python -c pass`), and for
`keys list` Python importing what it cannot do without (the store, on SQLAlchemy and aiosqlite, and the
settings, on pydantic-settings).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

FLOOR_IMPORTS = "import bastion.db.store, bastion.config.settings, aiosqlite"


def bastion_command() -> list[str]:
    """The `bastion` console script of this interpreter's environment (what a user runs), else `-m`."""
    script = Path(sys.executable).with_name("bastion")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bastion"]


def _env(database: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return inherited | {"BASTION_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}


def _median_ms(command: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=True)  # warm the file cache
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(workdir: Path, runs: int) -> dict[str, float]:
    """Milliseconds, medians of `runs` starts each; the database lives (and is removed) in workdir."""
    home = workdir / "cli-start"
    home.mkdir(parents=True, exist_ok=True)
    env, bastion = _env(home / "bastion.db"), bastion_command()
    try:
        for args in (
            ["migrate"],
            ["accounts", "create", "bench-cli", "--credits", "10"],
            *(["keys", "create", "bench-cli", "--name", f"k{n}"] for n in range(3)),
        ):
            subprocess.run([*bastion, *args], env=env, cwd=home, capture_output=True, check=True)
        return {
            "runs": runs,
            "version_ms": _median_ms([*bastion, "--version"], env, home, runs),
            "help_ms": _median_ms([*bastion, "--help"], env, home, runs),
            "keys_list_ms": _median_ms([*bastion, "keys", "list"], env, home, runs),
            "python_ms": _median_ms([sys.executable, "-c", "pass"], env, home, runs),
            "keys_list_floor_ms": _median_ms([sys.executable, "-c", FLOOR_IMPORTS], env, home, runs),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)
