"""The models file: upstream providers and the public models routed to them.

Loading either returns a fully checked `Catalog` or raises one `ConfigError` naming the file, the key
path and the problem, so a broken file stops the process at start with a message an operator can act on.
Secrets never live in the file: a provider's key is a `${ENV_VAR}` reference resolved at load time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

if TYPE_CHECKING:
    from bastion.config.settings import Settings

ENDPOINT_KINDS = ("chat", "completions", "embeddings", "images", "transcription", "responses", "tts")
CATEGORIES = ("LLM", "Code", "Vision", "Safety", "Embedding", "Image", "Transcription", "TTS")

EndpointKind = Literal["chat", "completions", "embeddings", "images", "transcription", "responses", "tts"]
Category = Literal["LLM", "Code", "Vision", "Safety", "Embedding", "Image", "Transcription", "TTS"]

DEFAULT_ENDPOINTS: dict[str, list[str]] = {
    "LLM": ["chat", "completions"],
    "Code": ["chat", "completions"],
    "Vision": ["chat"],
    "Safety": ["chat"],
    "Embedding": ["embeddings"],
    "Image": ["images"],
    "Transcription": ["transcription"],
    "TTS": ["tts"],
}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A models-file problem: which file, where in it, and what is wrong."""

    def __init__(self, file: Path | str, path: str, problem: str) -> None:
        self.file = str(file)
        self.path = path
        self.problem = problem
        super().__init__(f"{self.file}: {path}: {problem}" if path else f"{self.file}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect: float = Field(10.0, gt=0, description="Seconds to open a connection to the upstream.")
    read: float = Field(300.0, gt=0, description="Seconds to wait for each read (first byte included).")


class ProviderConfig(_Strict):
    name: str = Field(min_length=1)
    type: Literal["openai", "mock"] = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeouts: Timeouts = Timeouts()
    headers: dict[str, str] = {}
    max_connections: int = Field(256, ge=1, description="Pooled connections to this upstream.")
    max_concurrency: int | None = Field(None, ge=1, description="Requests in flight at most; past it, 503.")
    chunk_delay_ms: float = Field(0.0, ge=0, description="mock only: pause between streamed chunks.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{value}' is not an http(s) URL with a host")
        return value.rstrip("/")


class Deployment(_Strict):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The model name the upstream knows.")
    weight: int = Field(1, ge=0)


class Price(_Strict):
    """USD prices, exact decimals, one per unit a model can be billed in."""

    input: Decimal = Field(Decimal(0), ge=0, description="USD per 1M input tokens")
    output: Decimal = Field(Decimal(0), ge=0, description="USD per 1M output tokens")
    image: Decimal = Field(Decimal(0), ge=0, description="USD per generated image")
    audio_second: Decimal = Field(Decimal(0), ge=0, description="USD per second of transcribed audio")
    characters: Decimal = Field(Decimal(0), ge=0, description="USD per 1M characters synthesised")
    request: Decimal = Field(Decimal(0), ge=0, description="USD per request (transcription without duration)")

    @field_validator("input", "output", "image", "audio_second", "characters", "request", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # YAML reads 0.08 as a float; its shortest repr is what the operator wrote.
        return Decimal(repr(value)) if isinstance(value, float) else value


class ModelConfig(_Strict):
    id: str = Field(min_length=1)
    category: Category
    endpoints: tuple[EndpointKind, ...] = ()
    deployments: tuple[Deployment, ...] = Field(min_length=1)
    price: Price
    max_output_tokens: int | None = Field(None, ge=1, description="Default output cap used for credit.")

    def serves(self, kind: str) -> bool:
        return kind in self.endpoints


class _ModelsFile(_Strict):
    providers: tuple[ProviderConfig, ...] = Field(min_length=1)
    models: tuple[ModelConfig, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Catalog:
    """What the models file declares, checked: providers and models by name."""

    source: str
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    created: int = 0  # unix time the file was written: the models' `created`
    sha256: str = ""  # of the file's bytes: the version a running process reports (/readyz, /metrics)


def demo_models_file() -> Path:
    """The built-in demo's models file (`bastion serve --demo`): mock models, no network."""
    return Path(str(resources.files("bastion") / "demo.yaml"))


def served_models_file(settings: Settings) -> Path:
    """The models file `bastion serve` serves with these settings: the demo's, or BASTION_CONFIG."""
    return demo_models_file() if settings.demo else Path(settings.config)


def load_catalog(path: Path | str, require_env: bool = True) -> Catalog:
    """`require_env=False`: a `${VAR}` whose variable is unset is kept as written, for a reader that
    needs only the models (the CLI checking a key's models, where providers' keys are not set)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        created = int(path.stat().st_mtime)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the models file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    catalog = parse_catalog(text, path, require_env)
    return dataclasses.replace(catalog, created=created, sha256=hashlib.sha256(data).hexdigest())


def parse_catalog(text: str, source: Path | str, require_env: bool = True) -> Catalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "the models file must be a mapping with 'providers' and 'models'")

    _require_env_references(raw, source)
    raw = _substitute_env(raw, "", source, require_env)
    try:
        parsed = _ModelsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(source, _loc_path(first["loc"], raw), first["msg"]) from None
    return _cross_check(parsed, source)


def _cross_check(parsed: _ModelsFile, source: Path | str) -> Catalog:
    providers: dict[str, ProviderConfig] = {}
    for i, provider in enumerate(parsed.providers):
        where = f"providers[{i}]"
        if provider.name in providers:
            raise ConfigError(source, f"{where}.name", f"duplicate provider name '{provider.name}'")
        if provider.type == "openai" and provider.base_url is None:
            raise ConfigError(source, f"{where}.base_url", "required for a provider of type 'openai'")
        providers[provider.name] = provider

    models: dict[str, ModelConfig] = {}
    for i, model in enumerate(parsed.models):
        where = f"models[{i}]"
        if model.id in models:
            raise ConfigError(source, f"{where}.id", f"duplicate model id '{model.id}'")
        for j, deployment in enumerate(model.deployments):
            if deployment.provider not in providers:
                known = ", ".join(sorted(providers))
                raise ConfigError(
                    source,
                    f"{where}.deployments[{j}].provider",
                    f"unknown provider '{deployment.provider}' (declared: {known})",
                )
        if not any(d.weight > 0 for d in model.deployments):
            raise ConfigError(
                source, f"{where}.deployments", "at least one deployment needs a weight above 0"
            )
        if not model.endpoints:
            model = model.model_copy(update={"endpoints": tuple(DEFAULT_ENDPOINTS[model.category])})
        models[model.id] = model
    return Catalog(source=str(source), providers=providers, models=models)


def _require_env_references(raw: dict[str, Any], source: Path | str) -> None:
    providers = raw.get("providers")
    if not isinstance(providers, list):
        return
    for i, provider in enumerate(providers):
        key = provider.get("api_key") if isinstance(provider, dict) else None
        if key is not None and not (isinstance(key, str) and _ENV_REF.fullmatch(key.strip())):
            raise ConfigError(
                source,
                f"providers[{i}].api_key",
                "must be an environment variable reference like ${OVH_API_KEY}; "
                "secrets do not belong in the models file",
            )


def _substitute_env(node: Any, path: str, source: Path | str, required: bool = True) -> Any:
    if isinstance(node, dict):
        return {
            k: _substitute_env(v, f"{path}.{k}" if path else str(k), source, required)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", source, required) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def resolve(match: re.Match[str]) -> str:
            name = match.group(1)
            value = os.environ.get(name)
            if value is None:
                if not required:
                    return match.group(0)
                raise ConfigError(source, path, f"environment variable {name} is not set")
            return value

        return _ENV_REF.sub(resolve, node)
    return node


def _loc_path(loc: tuple[int | str, ...], raw: Any) -> str:
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id") or node.get("name"), str):
                out += f"({node.get('id') or node.get('name')})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out
