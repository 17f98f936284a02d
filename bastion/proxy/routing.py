"""Which upstream serves a request: public model id -> a weighted choice among its deployments."""

from __future__ import annotations

import random
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import orjson

from bastion.config import Catalog, Deployment, ModelConfig
from bastion.errors import model_not_found
from bastion.proxy.providers import Provider


class ModelNameRestorer:
    """Puts the public model id back where the upstream wrote its own name, without re-encoding JSON.

    Only a `"model": "<upstream name>"` key/value matches: inside a JSON string every quote is escaped,
    so generated text that merely mentions the name is never touched.
    """

    __slots__ = ("_compact", "_compact_public", "_pattern", "_public", "identity")

    def __init__(self, upstream_name: str, public_id: str) -> None:
        self.identity = upstream_name == public_id
        encoded = orjson.dumps(upstream_name)[1:-1]
        self._pattern = re.compile(rb'("model"\s*:\s*)"' + re.escape(encoded) + rb'"')
        self._public = orjson.dumps(public_id)
        # Servers write `"model":"name"` without spaces: a plain replace does those, the regex the rest.
        self._compact = b'"model":"' + encoded + b'"'
        self._compact_public = b'"model":' + self._public

    def __call__(self, data: bytes) -> bytes:
        if self.identity or b'"model"' not in data:
            return data
        pieces = data.split(self._compact)  # split + join: twice as fast as bytes.replace here
        if data.count(b'"model"') == len(pieces) - 1:
            return self._compact_public.join(pieces) if len(pieces) > 1 else data
        return self._pattern.sub(self._replace, data)

    def count(self, data: bytes) -> tuple[bytes, int]:
        if self.identity:
            return data, 0
        return self._pattern.subn(self._replace, data)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        return match.group(1) + self._public


@dataclass(frozen=True, slots=True)
class Target:
    deployment: Deployment
    provider: Provider
    restore_model: ModelNameRestorer


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Route:
    model: ModelConfig
    target: Target


class _Choices:
    __slots__ = ("_orders", "cumulative", "targets", "total")

    def __init__(self, targets: list[Target]) -> None:
        self.targets = [t for t in targets if t.deployment.weight > 0]
        self.cumulative = list(accumulate(t.deployment.weight for t in self.targets))
        self.total = self.cumulative[-1]
        self._orders = {id(first): self._order(first) for first in self.targets}

    def pick(self) -> Target:
        if len(self.targets) == 1:
            return self.targets[0]
        return self.targets[bisect_right(self.cumulative, random.random() * self.total)]

    def after(self, first: Target) -> list[Target]:
        """Every deployment to try, `first` first, then the others by decreasing weight."""
        order = self._orders.get(id(first))
        return order if order is not None else self._order(first)

    def _order(self, first: Target) -> list[Target]:
        rest = sorted((t for t in self.targets if t is not first), key=lambda t: -t.deployment.weight)
        return [first, *rest]


class Router:
    """One models file's routes. A reload builds a new Router and the gateway swaps it in; requests
    resolved from an old one keep it (and its deployments) to their end: `active` counts them, and a
    retired router's `on_idle` runs when its last one ends (then its retired pools can close)."""

    def __init__(
        self, catalog: Catalog, providers: dict[str, Provider], previous: Router | None = None
    ) -> None:
        self.catalog = catalog
        self.active = 0  # requests resolved from this router and not yet over
        self.on_idle: Callable[[], None] | None = None  # set once retired while requests were active
        # An unchanged deployment (same model, deployment and provider object) keeps its Target, so
        # what is keyed by it (its circuit breaker) survives a reload.
        kept = {} if previous is None else previous._reusable()

        def target(model: ModelConfig, d: Deployment) -> Target:
            provider = providers[d.provider]
            found = kept.pop((model.id, d, id(provider)), None)  # once: a duplicate gets its own
            return found if found is not None else Target(d, provider, ModelNameRestorer(d.model, model.id))

        self._choices = {
            model.id: _Choices([target(model, d) for d in model.deployments])
            for model in catalog.models.values()
        }
        self._objects: list[dict[str, object]] = [
            {
                "id": model.id,
                "object": "model",
                "created": catalog.created,
                "owned_by": "bastion",
                "category": model.category,
                "endpoints": list(model.endpoints),
            }
            for model in catalog.models.values()
        ]
        self._objects_by_id = {o["id"]: o for o in self._objects}  # type: ignore[misc]

    def release(self) -> None:
        """A request resolved from this router (`active += 1`) is over."""
        self.active -= 1
        if self.on_idle is not None and not self.active:
            self.on_idle()  # a reload retired this router: this was its last request

    def _reusable(self) -> dict[tuple[str, Deployment, int], Target]:
        return {
            (model_id, t.deployment, id(t.provider)): t
            for model_id, choices in self._choices.items()
            for t in choices.targets
        }

    def all_targets(self) -> list[Target]:
        """Every deployment a request resolved from this router may use."""
        return [t for choices in self._choices.values() for t in choices.targets]

    def targets(self, model_id: str) -> list[Target]:
        """The model's deployments that take traffic (weight above zero)."""
        choices = self._choices.get(model_id)
        return list(choices.targets) if choices is not None else []

    def model_objects(self) -> list[dict[str, object]]:
        """Every model as OpenAI's model object (plus Bastion's category and endpoint kinds)."""
        return self._objects

    def model_object(self, model_id: str) -> dict[str, object] | None:
        return self._objects_by_id.get(model_id)

    def candidates(self, route: Route) -> list[Target]:
        return self._choices[route.model.id].after(route.target)

    def first_serving(self, kind: str) -> str | None:
        return next((m.id for m in self.catalog.models.values() if m.serves(kind)), None)

    def resolve(self, model_id: str, kind: str) -> Route:
        model = self.catalog.models.get(model_id)
        if model is None:
            raise model_not_found(model_id)
        if not model.serves(kind):
            raise model_not_found(model_id, f"does not serve the {kind} endpoint")
        return Route(model, self._choices[model_id].pick())
