"""Pure ASGI middleware, one per module, outermost first as ``app.create_app`` stacks them:
request id, the request's span, the access log, HTTP metrics, error boundary, access (keys
and request rate limits, so an unknown caller never gets its body read), body limit, then
the direct completion routes.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and the client-disconnect
signal pass through untouched.
"""

from gateway.api.middleware.access import Access, AuthMiddleware
from gateway.api.middleware.access_log import AccessLogMiddleware
from gateway.api.middleware.body_limit import BodyLimitMiddleware
from gateway.api.middleware.direct_routes import DirectRoutes, Endpoint
from gateway.api.middleware.error_boundary import ErrorBoundaryMiddleware
from gateway.api.middleware.http_metrics import HttpMetricsMiddleware
from gateway.api.middleware.request_id import RequestIdMiddleware, request_id_of
from gateway.api.middleware.tracing import TracingMiddleware

__all__ = [
    "Access",
    "AccessLogMiddleware",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "DirectRoutes",
    "Endpoint",
    "ErrorBoundaryMiddleware",
    "HttpMetricsMiddleware",
    "RequestIdMiddleware",
    "TracingMiddleware",
    "request_id_of",
]
