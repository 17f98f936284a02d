"""Configuration: environment settings and the models file.

The names load with their module when first used (PEP 562): a CLI command that needs only the settings
does not read YAML or build the models file's schema.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.config.models_file import (
        CATEGORIES,
        ENDPOINT_KINDS,
        Catalog,
        ConfigError,
        Deployment,
        ModelConfig,
        Price,
        ProviderConfig,
        demo_models_file,
        load_catalog,
        served_models_file,
    )
    from bastion.config.settings import Settings

__all__ = [
    "CATEGORIES",
    "ENDPOINT_KINDS",
    "Catalog",
    "ConfigError",
    "Deployment",
    "ModelConfig",
    "Price",
    "ProviderConfig",
    "Settings",
    "demo_models_file",
    "load_catalog",
    "served_models_file",
]
_HOME = {name: "bastion.config.models_file" for name in __all__} | {"Settings": "bastion.config.settings"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOME[name]), name)
