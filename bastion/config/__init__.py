"""Configuration: environment settings and the models file."""

from bastion.config.models_file import (
    CATEGORIES,
    ENDPOINT_KINDS,
    Catalog,
    ConfigError,
    Deployment,
    ModelConfig,
    Price,
    ProviderConfig,
    load_catalog,
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
    "load_catalog",
]
