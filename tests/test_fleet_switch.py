"""Three real gateway processes follow one registry: a version promoted while they are
under load is served by every one of them within seconds, and no request fails."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import httpx

from gateway.loop.notify import publish_serving
from gateway.loop.registry import Manifest, Registry
from tests.conftest import TinyStudent, free_port, serve_process, write_calibrator, write_task
from tests.redis_server import RedisServer


def add_version(registry: Registry, student: Path) -> str:
    version = registry.next_version()
    staged = registry.staging(version)
    shutil.copytree(student, staged / "student")
    write_calibrator(staged / "calibration.json", staged / "student")
    registry.add(Manifest(version, None, "2026-12-02T00:00:00+00:00", "rejected"))
    return version


def test_three_gateways_switch_to_a_promoted_version_under_load(
    tmp_path: Path, redis_server: RedisServer, tiny_student: TinyStudent
) -> None:
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = add_version(registry, tiny_student.path)
    registry.promote(v1)
    write_task(
        tmp_path / "tasks",
        tmp_path / "no-student",
        extra=f'[loop]\nregistry = "{tmp_path / "registry"}"\n',
    )
    env = {"DISTILLGATE_LOOP": "off", "DISTILLGATE_REGISTRY_POLL_S": "5"}
    ports = [free_port() for _ in range(3)]
    procs = [
        serve_process(
            tmp_path,
            redis_server,
            port,
            env={**env, "DISTILLGATE_SPOOL_DIR": str(tmp_path / f"spool{port}")},
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    failures: list[str] = []
    seen: dict[str, set[str]] = {url: set() for url in urls}
    stop = threading.Event()

    def load(url: str) -> None:
        prompts = [e.prompt for e in tiny_student.test]
        with httpx.Client(base_url=url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                body = {
                    "model": "banking77",
                    "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                }
                r = client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    failures.append(f"{url}: {r.status_code} {r.text[:200]}")
                else:
                    seen[url].add(r.headers["x-distillgate-student"])
                i += 1

    threads = [threading.Thread(target=load, args=(url,)) for url in urls for _ in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        assert all(seen[url] == {v1} for url in urls)
        v2 = add_version(registry, tiny_student.path)
        registry.promote(v2)
        asyncio.run(publish_serving(redis_server.url, "banking77"))
        promoted = time.monotonic()
        switched: dict[str, float] = {}
        while len(switched) < 3 and time.monotonic() - promoted < 30:
            for url in urls:
                if url not in switched:
                    (model,) = httpx.get(f"{url}/v1/models").json()["data"]
                    if model["student_version"] == v2:
                        switched[url] = time.monotonic() - promoted
            time.sleep(0.1)
        time.sleep(2)  # traffic on the new version too
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    print({"switch_seconds": switched, "versions_seen": {u: sorted(v) for u, v in seen.items()}})
    assert failures == []
    assert len(switched) == 3 and max(switched.values()) < 4  # the message, not the 5 s poll
    assert all(seen[url] == {v1, v2} for url in urls)
