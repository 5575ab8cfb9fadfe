"""The cache of teacher answers: the same hard prompt, asked again before the next round,
is answered from Redis instead of the frontier model.

A key is the teacher prompt as the teacher sees it (the task's system prompt and answers,
the turns, the answer schema, the limits and stop sequences), the teacher's provider,
model and temperature, and a scope: the caller's tenant by default, so one tenant's prompt
never returns another's answer. Entries live ``[cache] ttl_s``; ``clear`` starts a new
generation of a task's keys at once (the old ones expire with their TTL). A new teacher
model is a new key. Redis is shared by every replica (a Cluster too: a task's keys carry
its hash tag); when it does not answer, a lookup is a miss and a store is skipped, so the
cache can only save calls, never fail a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Protocol

from gateway.answers import canonical_json
from gateway.redis_clients import AsyncRedis, async_redis
from gateway.tasks import Task
from gateway.teachers.base import TeacherAnswer, TeacherRequest

__all__ = ["CacheUnavailable", "RedisTeacherCache", "TeacherCache", "cache_key"]

logger = logging.getLogger(__name__)


class CacheUnavailable(Exception):
    """The cache did not answer: the caller counts it and asks the teacher."""


class TeacherCache(Protocol):
    """``get`` answers None for a miss and raises ``CacheUnavailable`` when the cache cannot
    be reached; ``put`` never raises (a store skipped costs one more call later)."""

    async def get(self, task: str, key: str) -> TeacherAnswer | None: ...

    async def put(self, task: str, key: str, answer: TeacherAnswer, ttl_s: int) -> None: ...

    async def clear(self, task: str) -> None: ...

    async def aclose(self) -> None: ...


def cache_key(task: Task, request: TeacherRequest, scope: str) -> str:
    """What makes two escalations the same question to the same teacher, hashed."""
    teacher = task.teacher
    question = {
        "task": task.name,
        "provider": teacher.provider if teacher else None,
        "model": teacher.model if teacher else None,
        "temperature": teacher.temperature if teacher else None,
        "system": request.system,
        "messages": [[m.role, m.content] for m in request.messages],
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "schema": request.json_schema,
        "scope": scope,
    }
    return hashlib.sha256(canonical_json(question).encode()).hexdigest()


def _encode(answer: TeacherAnswer) -> str:
    fields = ("text", "model", "input_tokens", "output_tokens", "finish_reason")
    return json.dumps({name: getattr(answer, name) for name in fields})


def _decode(raw: bytes | str) -> TeacherAnswer:
    data = json.loads(raw)
    return TeacherAnswer(latency_s=0.0, **data)


class RedisTeacherCache:
    """Entries ``distillgate:{<task>}:cache:<generation>:<key>``; the generation counter
    ``distillgate:{<task>}:cache:generation``. Each call is bounded by ``timeout_s``."""

    def __init__(self, redis: AsyncRedis, *, timeout_s: float = 0.25) -> None:
        self._redis = redis
        self.timeout_s = timeout_s

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.25) -> RedisTeacherCache:
        client = async_redis(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, timeout_s=timeout_s)

    @staticmethod
    def _generation_key(task: str) -> str:
        return f"distillgate:{{{task}}}:cache:generation"

    async def _entry_key(self, task: str, key: str) -> str:
        generation = await self._redis.get(self._generation_key(task))
        number = int(generation) if generation is not None else 0
        return f"distillgate:{{{task}}}:cache:{number}:{key}"

    async def get(self, task: str, key: str) -> TeacherAnswer | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._redis.get(await self._entry_key(task, key))
        except Exception as exc:  # any failure is a miss, never an error
            logger.debug("teacher cache unavailable for %s: %s", task, exc)
            raise CacheUnavailable from None
        return None if raw is None else _decode(raw)

    async def put(self, task: str, key: str, answer: TeacherAnswer, ttl_s: int) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                entry = await self._entry_key(task, key)
                await self._redis.set(entry, _encode(answer), ex=ttl_s)
        except Exception as exc:  # a store skipped costs one more call later
            logger.debug("teacher cache store skipped for %s: %s", task, exc)

    async def clear(self, task: str) -> None:
        await self._redis.incr(self._generation_key(task))

    async def aclose(self) -> None:
        await self._redis.aclose()
