"""The cache of teacher answers in a real gateway, on a real Redis: a prompt escalated again
by the same tenant is served from the cache (``x-distillgate-cache: hit``, route ``cache``)
without a teacher call or a second capture record; another tenant's request never gets it;
an admin call forgets it; with Redis gone the teacher answers (a miss, never an error)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from gateway.capture.redis import default_stream_name
from gateway.keys import key_digest
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import LABELS, Gateway, serve_in_thread, write_calibrator, write_task
from tests.redis_server import RedisServer

KEY_ENV = "DISTILLGATE_CACHE_TEACHER_KEY"
ADMIN = "admin-cache-test"
PROMPT = "I still have not received my card"
KEYS = {
    "acme-app": ("k-acme-1", "acme"),
    "acme-batch": ("k-acme-2", "acme"),
    "globex": ("k-glx", None),
}


def ask(gw: Gateway, key: str, text: str = PROMPT) -> httpx.Response:
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "banking77", "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}", "x-distillgate-force-route": "teacher"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def test_the_cache_serves_a_tenant_its_own_teacher_answers_and_nothing_is_lost(
    tiny_student,
    run_gateway,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({PROMPT: "card_arrival"}, LABELS)))
    monkeypatch.setenv(KEY_ENV, "k")
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    write_task(
        tmp_path / "tasks", tiny_student.path, extra=f'calibrator = "{calibrator}"\n{teacher}'
    )
    entries = [
        f'[[keys]]\nname = "{name}"\nsha256 = "{key_digest(key).hex()}"\n'
        + (f'tenant = "{tenant}"\n' if tenant else "")
        for name, (key, tenant) in KEYS.items()
    ]
    (tmp_path / "keys.toml").write_text("\n".join(entries))
    gw = run_gateway(
        Settings(
            tasks_dir=tmp_path / "tasks",
            redis_url=redis_server.url,
            api_keys_file=tmp_path / "keys.toml",
            admin_key=ADMIN,  # type: ignore[arg-type]
            allow_force_route=True,
            spool_dir=tmp_path / "spool",
        )
    )

    def teacher_calls() -> int:
        return int(httpx.get(f"{sim.url}/sim/stats").json()["served"].get("anthropic", 0))

    first = ask(gw, "k-acme-1")
    assert first.headers["x-distillgate-route"] == "teacher"
    assert "x-distillgate-cache" not in first.headers
    deadline = time.monotonic() + 5
    while True:  # stored off the request path
        again = ask(gw, "k-acme-2")  # another key of the same tenant
        if again.headers["x-distillgate-route"] == "cache" or time.monotonic() > deadline:
            break
    assert again.headers["x-distillgate-route"] == "cache"
    assert again.headers["x-distillgate-cache"] == "hit"
    assert "x-distillgate-teacher-usage" not in again.headers  # nothing was paid
    assert again.json()["choices"][0]["message"]["content"] == "card_arrival"
    calls = teacher_calls()

    other = ask(gw, "k-glx")  # another tenant: never the first one's answer
    assert other.headers["x-distillgate-route"] == "teacher"
    assert teacher_calls() == calls + 1

    # Hits are counted, not captured: the loop must not count one label twice.
    assert gw.metric("distillgate_teacher_cache_lookups_total") >= 3
    assert gw.metric("distillgate_teacher_cache_saved_usd_total") > 0
    store = redis.Redis.from_url(redis_server.url)
    stream = default_stream_name("banking77")
    deadline = time.monotonic() + 10
    while store.xlen(stream) < calls + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert store.xlen(stream) == teacher_calls()  # one record per teacher call, none per hit

    # An admin call forgets the task's answers, on every replica.
    admin = {"authorization": f"Bearer {ADMIN}"}
    cleared = httpx.post(f"{gw.url}/admin/cache/clear", json={"task": "banking77"}, headers=admin)
    assert cleared.status_code == 200
    assert ask(gw, "k-acme-1").headers["x-distillgate-route"] == "teacher"
    missing = httpx.post(f"{gw.url}/admin/cache/clear", json={}, headers=admin)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "task"

    # Redis gone: a miss, and the teacher answers; no 5xx.
    redis_server.stop()
    gone = ask(gw, "k-acme-2")
    assert gone.headers["x-distillgate-route"] == "teacher"
    sim.stop()
