"""The serving process: ``create_app`` assembles it (``assembly.py``), ``lifespan.py`` runs
it, ``engines.py`` opens its students."""

from gateway.app.assembly import create_app
from gateway.app.engines import DefaultEngines, EngineFactory

__all__ = ["DefaultEngines", "EngineFactory", "create_app"]
