"""Make sure nginx and wrk are installed (apt-get as root), or fail with a clear message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
PACKAGES = {"nginx": "nginx", "wrk": "wrk"}


class ToolError(RuntimeError):
    pass


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def ensure_tools() -> dict[str, str]:
    """Paths of nginx and wrk, installing the missing ones with apt-get when running as root."""
    missing = [name for name in PACKAGES if which(name) is None]
    if missing:
        if os.geteuid() != 0 or which("apt-get") is None:
            raise ToolError(
                f"missing {', '.join(missing)}: install them (e.g. `sudo apt-get install -y "
                f"{' '.join(PACKAGES[m] for m in missing)}`) and run again"
            )
        _apt_install([PACKAGES[m] for m in missing])
    paths = {name: which(name) for name in PACKAGES}
    absent = [name for name, path in paths.items() if path is None]
    if absent:
        raise ToolError(f"{', '.join(absent)} still not found after apt-get install")
    return {name: path for name, path in paths.items() if path is not None}


def _apt_install(packages: list[str]) -> None:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", *packages]
    print(f"bench: installing {' '.join(packages)} with apt-get", file=sys.stderr, flush=True)
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolError(f"apt-get install {' '.join(packages)} failed:\n{done.stderr[-2000:]}")
