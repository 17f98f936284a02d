"""Everything between a validated request and the upstream: routing, providers, relaying answers."""
