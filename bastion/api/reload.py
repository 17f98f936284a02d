"""The models file in service, and reloading it in place (SIGHUP, `bastion config reload`, the admin API).

A reload reads and checks the whole file first: a broken one changes nothing (one error line; the old
catalog stays in service). Otherwise the providers whose settings did not change are kept as they are
(the same pool and connections), new and changed ones are started, and a new Router is swapped in with
one assignment, which the request path reads when a request starts. A request keeps the router it
started with, so it ends on the deployment it began on (a stream included, retries too); a provider the
new file dropped or changed is closed once the last request that could use it is over (each router
counts its requests: an integer, the request path's only cost). Unchanged deployments keep their
circuit breakers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from bastion import metrics
from bastion.config import Catalog, ConfigError, load_catalog
from bastion.proxy.providers import Provider, build_provider
from bastion.proxy.routing import Router, Target

if TYPE_CHECKING:
    from bastion.api.gateway import Gateway

log = logging.getLogger("bastion")

# Set by `bastion serve --workers N` for its workers: the supervisor's pid, which forwards SIGHUP to
# every worker (bastion/cli/process.py). Internal: not a setting.
SUPERVISOR_ENV = "_BASTION_SUPERVISOR_PID"


@dataclass(frozen=True, slots=True)
class ModelsVersion:
    """Which models file a process serves: its path, the sha256 of its bytes, when it was loaded."""

    path: str
    sha256: str
    loaded_at: float  # unix time

    def as_json(self) -> dict[str, Any]:
        loaded = datetime.fromtimestamp(self.loaded_at, UTC).isoformat(timespec="milliseconds")
        return {"path": self.path, "sha256": self.sha256, "loaded_at": loaded.replace("+00:00", "Z")}


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    version: ModelsVersion  # in service now: the new file's, or the previous one when the reload failed
    changed: bool = False  # False: the file's bytes were those already in service (nothing to do)
    models: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "reloaded" if self.changed else "unchanged",
            "models_file": self.version.as_json(),
            "models": self.models,
        }


class LoadedModels:
    """The providers (upstream pools) of the models file in service, its version, and reloading it.

    The router in service is the gateway's (`Gateway.router`); providers retired by a reload wait here
    until no router still serving requests uses them."""

    def __init__(self, catalog: Catalog) -> None:
        self.providers: dict[str, Provider] = {
            name: build_provider(config) for name, config in catalog.providers.items()
        }
        self.version = ModelsVersion(catalog.source, catalog.sha256, time.time())
        self._draining: list[Router] = []  # retired routers with requests still running
        self._retired: list[Provider] = []  # providers no longer in service, not yet closed
        self._closing: set[asyncio.Task[None]] = set()
        self._lock: asyncio.Lock | None = None

    def router(self, catalog: Catalog) -> Router:
        """The first router, on these providers."""
        return Router(catalog, self.providers)

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
        metrics.models_file_loaded(self.version.sha256, self.version.loaded_at)

    async def reload(self, gateway: Gateway, trigger: str) -> ReloadResult:
        """Read the models file again and, if it is valid and different, serve it from now on."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one reload at a time (a SIGHUP and an admin call may cross)
            return await self._reload(gateway, trigger)

    async def _reload(self, gateway: Gateway, trigger: str) -> ReloadResult:
        path = self.version.path
        try:
            catalog = load_catalog(path)
        except ConfigError as exc:
            return self._failed(str(exc), trigger)
        if catalog.sha256 == self.version.sha256:
            metrics.models_file_reloaded(True)
            log.info(
                "models file unchanged: %s sha256=%s",
                path,
                catalog.sha256[:12],
                extra={"trigger": trigger, "pid": os.getpid()},
            )
            return ReloadResult(True, self.version, changed=False, models=len(catalog.models))
        providers: dict[str, Provider] = {}
        started: list[Provider] = []
        for name, config in catalog.providers.items():
            current = self.providers.get(name)
            if current is not None and current.config == config:
                providers[name] = current  # unchanged: the same pool, its connections kept
                continue
            try:
                provider = build_provider(config)
                started.append(provider)
                await provider.start()
            except Exception as exc:
                for opened in started:
                    await opened.close()
                return self._failed(f"{path}: provider '{name}' cannot start: {exc}", trigger)
            providers[name] = provider
        old = gateway.router
        gateway.router = Router(catalog, providers, previous=old)  # the swap
        in_service = {id(p) for p in providers.values()}
        retired = [p for p in self.providers.values() if id(p) not in in_service]
        replaced, self.providers = self.version, providers
        self.version = ModelsVersion(path, catalog.sha256, time.time())
        self._retired += retired
        if old.active:
            old.on_idle = partial(self._drained, old, gateway)
            self._draining.append(old)
        self._settle(gateway)
        metrics.models_file_loaded(self.version.sha256, self.version.loaded_at, replaced.sha256)
        metrics.models_file_reloaded(True)
        log.info(
            "models file reloaded: %s sha256=%s (was %s): %d models; providers %d kept, %d new, %d retired",
            path,
            catalog.sha256[:12],
            replaced.sha256[:12],
            len(catalog.models),
            len(providers) - len(started),
            len(started),
            len(retired),
            extra={"trigger": trigger, "pid": os.getpid()},
        )
        return ReloadResult(True, self.version, changed=True, models=len(catalog.models))

    def _failed(self, error: str, trigger: str) -> ReloadResult:
        metrics.models_file_reloaded(False)
        log.error(
            "models file reload failed: %s (still serving sha256=%s)",
            error,
            self.version.sha256[:12],
            extra={"trigger": trigger, "pid": os.getpid()},
        )
        return ReloadResult(False, self.version, error=error)

    def _drained(self, router: Router, gateway: Gateway) -> None:
        """The last request of a retired router is over (called from the request path)."""
        router.on_idle = None
        self._draining.remove(router)
        self._settle(gateway)

    def _settle(self, gateway: Gateway) -> None:
        """Close the retired providers no router still serving requests uses; forget the circuit
        breakers of deployments none uses."""
        live: list[Target] = [*gateway.router.all_targets()]
        for router in self._draining:
            live += router.all_targets()
        in_use = {id(t.provider) for t in live}
        unused = [p for p in self._retired if id(p) not in in_use]
        self._retired = [p for p in self._retired if id(p) in in_use]
        for provider in unused:
            task = asyncio.get_running_loop().create_task(self._close(provider))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        metrics.breakers_retired(gateway.dispatcher.retain(live), live)

    async def _close(self, provider: Provider) -> None:
        try:
            await provider.close()
        except Exception:
            log.warning("closing retired provider %s failed", provider.name, exc_info=True)
        else:
            log.info(
                "closed provider %s: retired by a models-file reload, its last request over", provider.name
            )

    async def close(self) -> None:
        """Shutdown: every provider, in service or retired."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for provider in [*self.providers.values(), *self._retired]:
            await provider.close()
        self._retired.clear()
