"""The improvement loop end to end, as a user runs it on a schedule:
serve → capture → ``export`` → ``student train --init-from`` → ``calibrate --from-stream``
→ reload. Real gateway, real students, the teacher simulator, a real redis-server.

The weak student never saw one of the task's four intents; the traffic has all four.
After one round it must escalate less of the same traffic, and its accepted answers must
still be at least as accurate as the calibration target.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx

from gateway.cli import main
from gateway.examples import Example, read_examples, write_examples
from gateway.settings import Settings
from gateway.training.trainer import train_student
from tests.conftest import DATA, LABELS, TINY, Gateway, write_task
from tests.redis_server import RedisServer

ADMIN = "admin"
TARGET = 0.9


def per_label(path: Path, labels: tuple[str, ...], start: int, stop: int) -> list[Example]:
    rows = read_examples(path)
    return [e for label in labels for e in [x for x in rows if x.answer == label][start:stop]]


def run_traffic(gw: Gateway, traffic: list[Example]) -> dict[str, float]:
    client = gw.client()
    escalated = accepted = accepted_right = 0
    for ex in traffic:
        raw = client.chat.completions.with_raw_response.create(
            model="banking77", messages=[{"role": "user", "content": ex.prompt or ""}]
        )
        answer = raw.parse().choices[0].message.content
        if raw.headers["x-distillgate-route"] == "student":
            accepted += 1
            accepted_right += answer == ex.answer
        else:
            escalated += 1
    return {
        "escalation": escalated / len(traffic),
        "accepted_accuracy": accepted_right / accepted if accepted else 1.0,
        "accepted": accepted,
    }


def test_one_round_of_the_loop_lowers_escalation_and_keeps_accuracy(
    run_gateway, tmp_path: Path, redis_server: RedisServer, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    seen = LABELS[:3]
    weak_train = tmp_path / "weak-train.jsonl"
    write_examples(weak_train, per_label(DATA / "train.jsonl", seen, 0, 60))
    weak = tmp_path / "weak"
    train_student(
        read_examples(weak_train),
        per_label(DATA / "test.jsonl", seen, 0, 10),
        weak,
        dataclasses.replace(TINY, max_steps=150),
        answers=LABELS,
    )
    calibration = tmp_path / "calibration.jsonl"
    write_examples(calibration, per_label(DATA / "test.jsonl", LABELS, 10, 40))
    traffic = per_label(DATA / "train.jsonl", LABELS, 60, 100)  # 160 requests, 4 intents
    known = tmp_path / "teacher-knows.jsonl"
    write_examples(known, traffic)

    tasks = tmp_path / "tasks"

    def point(student: Path, calibrator: Path) -> None:
        write_task(
            tasks,
            student,
            extra=(
                f'calibrator = "{calibrator}"\n'
                f"[routing]\ntarget_accuracy = {TARGET}\ndelta = 0.1\n"
                f'[teacher]\napi_key_env = "DISTILLGATE_TEST_UNSET"\nsimulator_data = ["{known}"]\n'
                "[capture]\naudit_rate = 0.1\nholdout_share = 0.3\n"
            ),
        )

    monkeypatch.setenv("DISTILLGATE_TASKS_DIR", str(tasks))
    monkeypatch.setenv("DISTILLGATE_REDIS_URL", redis_server.url)
    point(weak, tmp_path / "weak.calibration.json")
    main(["calibrate", "--task", "banking77", "--data", str(calibration)])

    gw = run_gateway(
        Settings(
            tasks_dir=tasks,
            redis_url=redis_server.url,
            spool_dir=tmp_path / "spool",
            admin_key=ADMIN,
        )
    )
    before = run_traffic(gw, traffic)
    assert before["escalation"] > 0.2  # a quarter of the traffic is an intent new to it

    captured = tmp_path / "round1" / "captured.jsonl"
    httpx.get(f"{gw.url}/healthz")  # (records are written off the request path)
    assert gw.metric("distillgate_capture_queued") == 0
    main(["export", "--task", "banking77", "--out", str(captured)])
    exported = read_examples(captured)
    assert {e.answer for e in exported} >= set(LABELS[3:])  # the teacher taught the new intent

    v2 = tmp_path / "round1" / "student"
    train = f"student train --data {weak_train} --data {captured} --init-from {weak}"
    main([*train.split(), "--out", str(v2), "--max-steps", "300", "--threads", "2"])
    v2_calibrator = tmp_path / "round1" / "student.calibration.json"
    calibrate = f"calibrate --task banking77 --student {v2} --from-stream --data {calibration}"
    main([*calibrate.split(), "--out", str(v2_calibrator)])
    point(v2, v2_calibrator)
    reloaded = httpx.post(
        f"{gw.url}/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    assert reloaded.status_code == 200, reloaded.text

    after = run_traffic(gw, traffic)
    print(json.dumps({"before": before, "after": after}))
    assert after["escalation"] < before["escalation"]
    assert after["accepted_accuracy"] >= TARGET
    assert after["accepted"] > before["accepted"]
