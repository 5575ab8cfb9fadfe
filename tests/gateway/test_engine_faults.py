"""Student engine faults, injected into a real embedded engine: a request's failure fails
that request only; a broken engine turns /readyz red and answers 503 (or the teacher, per
the task's policy), never a 500 with a trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import gateway.engines.transformers as transformers_engine
from gateway.app import DefaultEngines, create_app
from gateway.engines.base import GenerationRequest, Message, SamplingParams, StudentEngine
from gateway.engines.transformers import TransformersEngine
from gateway.errors import EngineUnavailable
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from gateway.tasks import Task
from tests.conftest import LABELS, serve_in_thread, write_calibrator, write_task

KEY_ENV = "DISTILLGATE_TEST_TEACHER_KEY"


def request(rid: str, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(
        rid, SamplingParams(**{"max_tokens": 8, **sampling}), messages=(Message("user", "card"),)
    )


async def drained(engine: TransformersEngine) -> bool:
    """The worker retires rows just after delivering their last token: wait for it."""
    for _ in range(100):
        if engine.pending == 0:
            return True
        await asyncio.sleep(0.01)
    return False


async def outcome(engine: TransformersEngine, req: GenerationRequest) -> str:
    try:
        return "".join([d.text async for d in engine.generate(req)])
    except EngineUnavailable as exc:
        return f"503: {exc.message}"


def test_one_rows_failure_fails_only_that_request(
    tiny_student, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    real = transformers_engine._sample_row

    def fragile(logits, sampling, generator):  # type: ignore[no-untyped-def]
        if sampling.seed == 666:
            raise RuntimeError("injected sampling fault")
        return real(logits, sampling, generator)

    monkeypatch.setattr(transformers_engine, "_sample_row", fragile)

    async def scenario() -> list[str]:
        engine = TransformersEngine(tiny_student.path, max_batch_size=8)
        await engine.start()
        try:
            reqs = [request(f"r{i}", temperature=0.7, seed=666 if i == 3 else i) for i in range(8)]
            results = await asyncio.gather(*(outcome(engine, r) for r in reqs))
            await engine.check_health()  # still up
            assert await drained(engine)
            return [*results, await outcome(engine, request("after"))]
        finally:
            await engine.aclose()

    results = asyncio.run(scenario())
    assert results[3] == "503: the student failed on this request"
    assert all(not r.startswith("503") for i, r in enumerate(results) if i != 3)


def test_a_failed_forward_pass_fails_its_batch_and_the_engine_goes_on(tiny_student) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        engine = TransformersEngine(tiny_student.path)
        await engine.start()
        forward = engine.model.forward
        try:
            engine.model.forward = _raising  # type: ignore[method-assign]
            assert (await outcome(engine, request("a"))).startswith("503")
            engine.model.forward = forward  # type: ignore[method-assign]
            assert not (await outcome(engine, request("b"))).startswith("503")
            await engine.check_health()
            assert await drained(engine)
        finally:
            await engine.aclose()

    asyncio.run(scenario())


def _raising(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected: CUDA error: an illegal memory access was encountered")


@pytest.fixture
def broken_gateway(tiny_student, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A gateway whose engine is then broken for good; task 'fallback' asks the teacher."""
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({"card": "card_arrival"}, LABELS)))
    monkeypatch.setenv(KEY_ENV, "k")
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    write_task(tmp_path / "tasks", tiny_student.path, "plain")
    write_task(
        tmp_path / "tasks",
        tiny_student.path,
        "fallback",
        f'calibrator = "{calibrator}"\n[routing]\non_student_failure = "teacher"\n{teacher}',
    )
    engines: list[StudentEngine] = []
    opener = DefaultEngines()

    def keep(task: Task, settings: Settings, metrics: Metrics) -> StudentEngine:
        engines.append(opener(task, settings, metrics))
        return engines[-1]

    served = serve_in_thread(
        create_app(Settings(tasks_dir=tmp_path / "tasks"), engine_factory=keep)
    )
    yield served.url, engines
    served.stop()
    sim.stop()


def test_a_broken_engine_turns_readyz_red_and_answers_503_or_the_teacher(broken_gateway) -> None:  # type: ignore[no-untyped-def]
    url, engines = broken_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
    messages = [{"role": "user", "content": "card"}]
    assert httpx.get(f"{url}/readyz").status_code == 200
    (engine,) = engines
    engine.model.forward = _raising
    statuses = []
    for _ in range(4):  # three failed steps in a row: the engine is declared broken
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="plain", messages=messages)  # type: ignore[arg-type]
        statuses.append(info.value.status_code)
        assert info.value.body["code"] == "student_unavailable"  # type: ignore[index]
        assert "Traceback" not in info.value.response.text
    assert statuses == [503] * 4
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and "failed" in ready.json()["error"]["message"]
    raw = client.chat.completions.with_raw_response.create(model="fallback", messages=messages)  # type: ignore[arg-type]
    assert raw.headers["x-distillgate-route"] == "teacher"
    assert raw.parse().choices[0].message.content == "card_arrival"
    assert httpx.get(f"{url}/healthz").status_code == 200  # alive: a restart is the cure
