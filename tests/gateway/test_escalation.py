"""Calibrated escalation end to end: real gateway, real student, the teacher simulator
over real HTTP driven by the anthropic SDK, called with the openai SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from calibration import Calibration, save_calibration
from gateway.examples import Example, write_examples
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    IN_DOMAIN,
    LABELS,
    Gateway,
    Unsure,
    serve_in_thread,
    write_calibrator,
    write_task,
)

KEY_ENV = "DISTILLGATE_TEST_TEACHER_KEY"


@dataclass
class Routed:
    gateway: Gateway
    sim: str
    unsure: Unsure

    def arm(self, mode: str | None, count: int = -1) -> None:
        httpx.post(f"{self.sim}/sim/faults", json={"mode": mode, "count": count}).raise_for_status()


@pytest.fixture(scope="module")
def routed(tiny_student, unsure, run_gateway, tmp_path_factory) -> Iterator[Routed]:  # type: ignore[no-untyped-def]
    answers = SimulatedAnswers(
        {unsure.prompt: unsure.teacher_answer(), IN_DOMAIN: "card_arrival"}, LABELS
    )
    served = serve_in_thread(create_sim_app(answers, timeout_s=30))
    sim = served.url

    tasks = tmp_path_factory.mktemp("routed-tasks")
    calibrator = write_calibrator(
        tasks / "tiny.calibration.json", tiny_student.path, unsure.threshold
    )
    teacher = (
        f'[teacher]\nprovider = "anthropic"\nmodel = "claude-test"\nbase_url = "{sim}"\n'
        f'api_key_env = "{KEY_ENV}"\ndeadline_s = 1.0\ntimeout_s = 0.8\nmax_attempts = 2\n'
    )
    extra = f'calibrator = "{calibrator}"\n'
    write_task(tasks, tiny_student.path, "banking77", extra + teacher)
    # its own teacher (another model name), so its circuit breaker is its own too
    strict_teacher = teacher.replace('"claude-test"', '"claude-strict"')
    write_task(
        tasks,
        tiny_student.path,
        "strict",
        extra + '[routing]\non_teacher_failure = "error"\n' + strict_teacher,
    )
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    gateway = run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    yield Routed(gateway, sim, unsure)
    mp.undo()
    served.stop()


def chat(gw: Gateway, text: str, model: str = "banking77", **kw: object):  # type: ignore[no-untyped-def]
    return gw.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def test_in_domain_is_answered_by_the_student(routed: Routed) -> None:
    routed.arm(None)
    raw = chat(routed.gateway, IN_DOMAIN)
    assert raw.headers["x-distillgate-route"] == "student"
    assert float(raw.headers["x-distillgate-confidence"]) >= routed.unsure.threshold
    assert raw.parse().choices[0].message.content == "card_arrival"


def test_an_unsure_answer_escalates_to_the_teacher(routed: Routed) -> None:
    routed.arm(None)
    unsure = routed.unsure
    raw = chat(routed.gateway, unsure.prompt, logprobs=True)
    assert raw.headers["x-distillgate-route"] == "teacher"
    assert float(raw.headers["x-distillgate-confidence"]) < unsure.threshold
    completion = raw.parse()
    assert completion.choices[0].message.content == unsure.teacher_answer()
    # the teacher's answer as the student's tokenizer splits it, scored by the student
    entries = completion.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == unsure.teacher_answer()
    # teacher-forced on an answer the student did not give: it was unsure of it
    assert all(e.logprob <= 0 for e in entries) and sum(e.logprob for e in entries) < 0
    assert completion.usage.completion_tokens == len(entries)


def test_streaming_decides_before_the_first_byte(routed: Routed) -> None:
    routed.arm(None)
    client = routed.gateway.client()
    with client.chat.completions.with_streaming_response.create(
        model="banking77", messages=[{"role": "user", "content": routed.unsure.prompt}], stream=True
    ) as response:
        assert response.headers["x-distillgate-route"] == "teacher"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == routed.unsure.teacher_answer()


def test_the_route_can_be_forced_when_allowed(routed: Routed) -> None:
    routed.arm(None)
    raw = chat(routed.gateway, IN_DOMAIN, extra_headers={"x-distillgate-force-route": "teacher"})
    assert raw.headers["x-distillgate-route"] == "teacher"
    with pytest.raises(openai.BadRequestError):
        chat(routed.gateway, IN_DOMAIN, extra_headers={"x-distillgate-force-route": "nobody"})


@pytest.mark.parametrize("fault", ["429", "529", "500", "timeout", "garbage"])
def test_teacher_faults_fall_back_to_the_student_within_the_deadline(
    routed: Routed, fault: str
) -> None:
    routed.arm(fault)
    started = time.monotonic()
    raw = chat(routed.gateway, routed.unsure.prompt)
    elapsed = time.monotonic() - started
    routed.arm(None)
    assert raw.headers["x-distillgate-route"] == "student-fallback"
    assert raw.parse().choices[0].message.content in LABELS
    assert elapsed < 3.0  # deadline 1 s, plus the student


def test_the_error_policy_answers_with_an_openai_error(routed: Routed) -> None:
    routed.arm("timeout")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(routed.gateway, routed.unsure.prompt, model="strict")
    routed.arm(None)
    # a teacher that never answers is a timeout: 504, as the error table says
    assert info.value.status_code == 504
    assert time.monotonic() - started < 3.0
    assert info.value.body["code"] == "teacher_timeout"  # type: ignore[index]


def test_models_report_calibration(routed: Routed) -> None:
    models = {m["id"]: m for m in httpx.get(f"{routed.gateway.url}/v1/models").json()["data"]}
    assert (
        models["banking77"]["calibrated"] is True
        and models["banking77"]["threshold"] == routed.unsure.threshold
    )


def test_a_calibrator_for_another_student_is_refused(tiny_student, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gateway.app import create_app

    calibrator = tmp_path / "c.json"
    save_calibration(
        Calibration(temperature=1.0, threshold=0.5, student_fingerprint="sha256:other"), calibrator
    )
    write_task(tmp_path / "tasks", tiny_student.path, extra=f'calibrator = "{calibrator}"\n')
    app = create_app(Settings(tasks_dir=tmp_path / "tasks"))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    import asyncio

    with pytest.raises(ValueError, match="recalibrate"):
        asyncio.run(start())


def test_without_a_key_the_demo_teacher_is_the_labelled_simulator(
    tiny_student, unsure, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "known.jsonl"
    write_examples(data, [Example(prompt=unsure.prompt, answer=unsure.teacher_answer())])
    teacher = (
        f'[teacher]\napi_key_env = "DISTILLGATE_TEST_UNSET_KEY"\nsimulator_data = ["{data}"]\n'
    )
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path, unsure.threshold)
    write_task(
        tmp_path / "tasks", tiny_student.path, extra=f'calibrator = "{calibrator}"\n' + teacher
    )
    gw = run_gateway(Settings(tasks_dir=tmp_path / "tasks"))
    model = httpx.get(f"{gw.url}/v1/models").json()["data"][0]
    assert "simulator" in model["teacher"] and "DISTILLGATE_TEST_UNSET_KEY" in model["teacher"]
    raw = chat(gw, unsure.prompt)
    assert raw.headers["x-distillgate-route"] == "teacher"
    assert raw.parse().choices[0].message.content == unsure.teacher_answer()
