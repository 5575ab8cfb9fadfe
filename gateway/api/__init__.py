"""The HTTP edge: OpenAI wire models, the wire <-> domain adapter, routes, admin, OpenAPI."""
