"""Stand-ins behind the real interfaces: the teacher simulator (``sim.py``, a real HTTP
server speaking Anthropic's and OpenAI's protocols: the demo's teacher without an API key,
and the integration tests'), and small in-process fakes (``fakes.py``: engine, teacher,
capture sink) for the fast tier of tests."""

from gateway.testing.fakes import FakeEngine, FakeTeacher, MemorySink, MemoryTeacherCache

__all__ = ["FakeEngine", "FakeTeacher", "MemorySink", "MemoryTeacherCache"]
