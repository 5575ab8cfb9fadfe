"""Small fakes behind the real interfaces, for the fast tier of tests and for trying the
pipeline without a model, a teacher or Redis. (The teacher simulator over real HTTP is
``gateway/teachers/sim.py``.)"""

from gateway.testing.fakes import FakeEngine, FakeTeacher, MemorySink

__all__ = ["FakeEngine", "FakeTeacher", "MemorySink"]
