"""What a management command runs in: the settings, the store, Redis when `BASTION_REDIS_URL` is set,
and `Management` over them. Imported only when such a command runs (the parser never needs it).

A refusal (bad input, an unknown account, a money figure that is not one) is one line on stderr and
exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from pathlib import Path

from bastion.cli.inputs import InputError
from bastion.cli.output import fail
from bastion.config import Settings
from bastion.db.errors import StoreError, UnknownModels
from bastion.db.store import Store
from bastion.management import Management
from bastion.money import MoneyError

Operation = Callable[[Management, argparse.Namespace], Awaitable[int]]


def run(operation: Operation, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_session(operation, args))
    except UnknownModels as exc:
        return fail(f"{exc}; --allow-unknown-models allows it anyway")
    except (StoreError, MoneyError, InputError) as exc:
        return fail(str(exc))


async def _session(operation: Operation, args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        store = Store.from_settings(settings)
    except ValueError as exc:
        raise InputError(f"BASTION_DATABASE_URL: {exc}") from None
    live = None
    try:
        if settings.redis_url:
            from bastion.billing.live import RedisLive  # only with Redis: redis-py is not imported else
            from bastion.billing.redis_target import RedisSetupError

            try:
                live = await RedisLive.connect(settings.redis_url, settings.redis_prefix)
            except RedisSetupError as exc:
                raise InputError(str(exc)) from None
        served = partial(served_models, settings, getattr(args, "config", None))
        return await operation(Management(store, live, served_models=served), args)
    finally:
        if live is not None:
            await live.close()
        await store.close()


def served_models(settings: Settings, config: str | None) -> Collection[str]:
    """The model ids of the models file `bastion serve` serves with these settings (`--config` first):
    what `keys create/update --models` is checked against. Read only when --models is given."""
    from bastion.config import ConfigError, demo_models_file, load_catalog, served_models_file

    path = Path(config) if config else served_models_file(settings)
    if not path.exists() and config is None and _demo_here(settings):
        path = demo_models_file()
    if not path.exists():
        raise InputError(
            f"cannot check --models: there is no models file {path} (give --config FILE or set"
            " BASTION_CONFIG, or --allow-unknown-models to skip the check)"
        )
    try:
        return load_catalog(path, require_env=False).models.keys()  # the providers' keys are not needed
    except ConfigError as exc:
        raise InputError(f"cannot check --models: {exc}") from None


def _demo_here(settings: Settings) -> bool:
    """`bastion serve --demo` was run in this directory (its key file is here) on the embedded database,
    and no models file is set: the demo's models are the ones served."""
    from bastion.cli.serve import DEMO_KEY_FILE
    from bastion.db.engine import is_sqlite

    return (
        "config" not in settings.model_fields_set
        and DEMO_KEY_FILE.exists()
        and is_sqlite(settings.database_url)
    )
