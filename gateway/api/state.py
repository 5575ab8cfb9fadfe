"""``GatewayState``: what the routes and middleware read, typed, in one object
(``app.state.gateway``), instead of loose ``app.state`` attributes.

Built before start-up with what exists then (settings, metrics, keys, the rate limiter);
the lifespan fills in the pipeline and the reloader once the tasks are deployed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from gateway.errors import Overloaded
from gateway.keys import KeyRing
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.pipeline.answer import Pipeline
from gateway.runtime.reloading import Reloader
from gateway.settings import Settings
from gateway.tracing import Tracing

__all__ = ["GatewayState", "gateway_state"]


@dataclass
class GatewayState:
    settings: Settings
    metrics: Metrics
    keyring: KeyRing  # swapped whole by a reload of the key file
    limiter: RateLimiter
    tracing: Tracing = field(default_factory=Tracing)  # off: every span a no-op
    pipeline: Pipeline | None = None  # None until the lifespan has deployed the tasks
    reloader: Reloader | None = None
    draining: bool = False  # POST /admin/drain: /readyz answers 503

    @property
    def serving(self) -> Pipeline:
        """The pipeline, or a 503 while the gateway is still starting."""
        if self.pipeline is None:
            raise Overloaded("The gateway is starting.", status_code=503)
        return self.pipeline


def gateway_state(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state.gateway
    return state
