"""The running instance as operators see it: its models file, dependencies, and each model's
deployments with their circuit breakers and requests in flight (this process's view: breakers and
concurrency are per process)."""

from __future__ import annotations

import os
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from bastion import __version__
from bastion.billing.redis_target import parse_redis_url
from bastion.config import Catalog, Settings
from bastion.db.engine import is_sqlite
from bastion.proxy.dispatch import Dispatcher
from bastion.proxy.routing import Router

STARTED = time.time()


class Instance(Protocol):
    settings: Settings
    catalog: Catalog

    @property
    def router(self) -> Router: ...

    @property
    def dispatcher(self) -> Dispatcher: ...

    async def readiness(self) -> list[str]: ...


def _host(url: str | None) -> str:
    """Where a provider is, without credentials or path."""
    if not url:
        return "built in"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


async def gateway_state(instance: Instance) -> dict[str, Any]:
    catalog, settings = instance.catalog, instance.settings
    dispatcher, router = instance.dispatcher, instance.router
    now = time.monotonic()
    models = []
    for model in catalog.models.values():
        deployments = []
        for target in router.targets(model.id):
            breaker = dispatcher.breaker(target)
            deployments.append(
                {
                    "provider": target.deployment.provider,
                    "model": target.deployment.model,
                    "weight": target.deployment.weight,
                    "breaker": breaker.state(now),
                    "failures": breaker.failures,
                }
            )
        models.append({"config": model, "deployments": deployments})
    providers = [
        {
            "name": p.name,
            "type": p.type,
            "host": _host(p.base_url),
            "max_connections": p.max_connections,
            "max_concurrency": p.max_concurrency,
            "in_flight": dispatcher.in_flight(p.name),
        }
        for p in catalog.providers.values()
    ]
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_seconds": int(time.time() - STARTED),
        "models_file": catalog.source,
        "database": "SQLite (embedded)" if is_sqlite(settings.database_url) else "PostgreSQL",
        "redis": _redis_kind(settings.redis_url),
        "workers": settings.workers,
        "problems": await instance.readiness(),
        "models": models,
        "providers": providers,
    }


def _redis_kind(url: str | None) -> str | None:
    if not url:
        return None
    mode = parse_redis_url(url).mode
    return {"cluster": "Redis Cluster", "sentinel": "Redis (Sentinel)"}.get(mode, "Redis")
