"""The API's own paths: the values a metric label or a span name may take, so that a
scanner probing random URLs cannot grow either without bound."""

from __future__ import annotations

__all__ = ["API_PATHS"]

API_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models"})
