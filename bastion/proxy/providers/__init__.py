"""Upstream providers: `openai` (any OpenAI-compatible HTTP server) and the built-in `mock`."""

from bastion.config import ProviderConfig
from bastion.proxy.providers.base import Provider, UpstreamRequest, UpstreamResponse
from bastion.proxy.providers.http import HttpProvider
from bastion.proxy.providers.mock import MockProvider


def build_provider(config: ProviderConfig) -> Provider:
    if config.type == "mock":
        return MockProvider(config)
    return HttpProvider(config)


__all__ = [
    "HttpProvider",
    "MockProvider",
    "Provider",
    "UpstreamRequest",
    "UpstreamResponse",
    "build_provider",
]
