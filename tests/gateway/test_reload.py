"""Reloading a new calibrator and a new student without a restart, and refusing bad pairs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from calibration import student_fingerprint
from gateway.settings import Settings
from gateway.training.trainer import train_student
from tests.conftest import (
    TINY,
    Gateway,
    TinyStudent,
    free_port,
    serve_process,
    write_calibrator,
    write_task,
)
from tests.redis_server import RedisServer

ADMIN = "admin-secret"
PROMPT = "I still have not received my card"


@pytest.fixture(scope="module")
def second_student(tiny_student: TinyStudent, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("student-2")
    train_student(tiny_student.train, tiny_student.test, out, dataclasses.replace(TINY, seed=1))
    return out


def calibrator(path: Path, student: Path, threshold: float = 0.5) -> Path:
    return write_calibrator(path, student, threshold)


def point(tasks: Path, student: Path, calibrator_path: Path) -> None:
    write_task(tasks, student, extra=f'calibrator = "{calibrator_path}"\n')


def reload(gw: Gateway, key: str = ADMIN) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/admin/reload", headers={"authorization": f"Bearer {key}"}, timeout=60
    )


def status(gw: Gateway) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{gw.url}/admin/status", headers={"authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()["tasks"]["banking77"]  # type: ignore[no-any-return]


def test_admin_endpoints_need_the_admin_key(tiny_student, run_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    point(tmp_path / "t", tiny_student.path, calibrator(tmp_path / "c.json", tiny_student.path))
    off = run_gateway(Settings(tasks_dir=tmp_path / "t"))
    assert reload(off).status_code == 404  # no admin key configured: no admin endpoints
    on = run_gateway(Settings(tasks_dir=tmp_path / "t", admin_key=ADMIN, api_keys=["client"]))
    for key in ("wrong", "client"):  # a client key is not an admin key
        r = reload(on, key)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert reload(on).status_code == 200


def test_a_new_student_and_calibrator_swap_in_without_a_failed_request(
    tiny_student, second_student: Path, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tasks = tmp_path / "tasks"
    first = calibrator(tmp_path / "first.json", tiny_student.path)
    point(tasks, tiny_student.path, first)
    gw = run_gateway(Settings(tasks_dir=tasks, admin_key=ADMIN))
    before = status(gw)
    assert before["student_fingerprint"] == student_fingerprint(tiny_student.path)

    # a mismatched pair (the first student's calibrator beside the second student) is refused
    point(tasks, second_student, first)
    refused = reload(gw)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "reload_refused"
    assert status(gw) == before  # still serving the old pair

    point(tasks, second_student, calibrator(tmp_path / "second.json", second_student))
    failures: list[BaseException] = []
    answered = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal answered
        client = gw.client()
        while not stop.is_set():
            try:
                client.chat.completions.create(
                    model="banking77", messages=[{"role": "user", "content": PROMPT}]
                )
                answered += 1
            except openai.OpenAIError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    swapped = reload(gw)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert swapped.status_code == 200, swapped.text
    assert failures == [] and answered > 20
    after = status(gw)
    assert after["student_fingerprint"] == student_fingerprint(second_student)
    assert after["calibrator_version"] != before["calibrator_version"]
    assert gw.metric('distillgate_reloads_total{outcome="ok"}') == 1
    assert gw.metric('distillgate_reloads_total{outcome="refused"}') == 1


def test_sighup_reloads_a_running_process(
    tiny_student, tmp_path: Path, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    tasks = tmp_path / "tasks"
    cal = calibrator(tmp_path / "c.json", tiny_student.path, threshold=0.5)
    point(tasks, tiny_student.path, cal)
    port = free_port()
    os.environ["DISTILLGATE_ADMIN_KEY"] = ADMIN
    try:
        proc = serve_process(tmp_path, redis_server, port)
    finally:
        del os.environ["DISTILLGATE_ADMIN_KEY"]
    gw = Gateway(f"http://127.0.0.1:{port}", Settings())
    try:
        before = status(gw)["calibrator_version"]
        calibrator(cal, tiny_student.path, threshold=0.9)  # a recalibrated artifact, same path
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while status(gw)["calibrator_version"] == before:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.1)
        model = httpx.get(f"{gw.url}/v1/models").json()["data"][0]
        assert model["threshold"] == 0.9
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_student_that_will_not_load_is_refused_and_the_old_one_keeps_serving(
    tiny_student, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tasks = tmp_path / "tasks"
    point(tasks, tiny_student.path, calibrator(tmp_path / "c.json", tiny_student.path))
    gw = run_gateway(Settings(tasks_dir=tasks, admin_key=ADMIN))
    before = status(gw)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_student.path, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    point(tasks, broken, calibrator(tmp_path / "b.json", broken))  # a matching, useless pair
    refused = reload(gw)
    assert refused.status_code == 409, refused.text
    assert "broken" not in json.dumps(status(gw)) and status(gw) == before
    reply = gw.client().chat.completions.create(
        model="banking77", messages=[{"role": "user", "content": PROMPT}]
    )
    assert reply.choices[0].message.content
