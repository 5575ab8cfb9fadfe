"""The production engine end to end (the vLLM tier): vLLM's engine answers as the embedded
engine does on the same student, and a gateway whose task says ``[engine] kind = "vllm"``
serves the official openai client on both routes, streamed or not, with logprobs and the
task's answer schema enforced by vLLM's guidance backend on any prompt."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import string
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from calibration import load_calibration, save_calibration
from gateway.app import create_app
from gateway.cli import main
from gateway.engines.factory import replay_engine
from gateway.engines.transformers import TransformersEngine
from gateway.engines.vllm import VLLMEngine
from gateway.examples import write_examples
from gateway.jobs.calibrate import score_set, sequence_confidence
from gateway.jobs.replay import replay
from gateway.loop.registry import Registry
from gateway.loop.round import run_round
from gateway.loop.trainers import trainer_for
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from gateway.tasks import PromptFormat, load_tasks
from tests.conftest import (
    DATA,
    IN_DOMAIN,
    LABELS,
    Gateway,
    Unsure,
    serve_in_thread,
    write_calibrator,
    write_task,
)
from tests.gateway.loop.helpers import captured
from tests.gateway.loop.test_round import TRAINER
from tests.gateway.test_structured import SCHEMA
from tests.loop_fleet import loop_task
from tests.test_loop import per_label
from tests.vllm_tier import ON_VLLM, engine_arguments

pytestmark = ON_VLLM

KEY_ENV = "DISTILLGATE_TEST_TEACHER_KEY"
ENGINE = '[engine]\nkind = "vllm"\nenforce_eager = true\nmax_num_seqs = 64\ndtype = "float32"\n'


def test_vllm_answers_as_the_embedded_engine(tiny_student) -> None:  # type: ignore[no-untyped-def]
    """The engine that serves and the engine that judged the student agree: the same greedy
    answers, token log-probabilities within 0.05."""
    examples = tiny_student.test[:100]

    async def answers(engine):  # type: ignore[no-untyped-def]
        await engine.start()
        try:
            return await replay(engine, examples, max_tokens=24, prompt=PromptFormat())
        finally:
            await engine.aclose()

    embedded = asyncio.run(answers(TransformersEngine(tiny_student.path, max_batch_size=32)))
    served = asyncio.run(answers(VLLMEngine(tiny_student.path, **engine_arguments())))
    same = [a.text == b.text for a, b in zip(embedded, served, strict=True)]
    assert sum(same) >= 0.98 * len(examples)
    gaps = [
        abs(x - y)
        for a, b, agree in zip(embedded, served, same, strict=True)
        if agree
        for x, y in zip(a.logprobs, b.logprobs, strict=True)
    ]
    assert gaps and max(gaps) <= 0.05, max(gaps)


@pytest.fixture(scope="module")
def gw(tiny_student, unsure, run_gateway, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    answers = SimulatedAnswers(
        {unsure.prompt: unsure.teacher_answer(), IN_DOMAIN: "card_arrival"}, LABELS
    )
    sim = serve_in_thread(create_sim_app(answers, timeout_s=30))
    tasks = tmp_path_factory.mktemp("vllm-tasks")
    engine = ENGINE
    # the threshold measured on the embedded engine: vLLM's log-probabilities are within 0.05
    calibrator = write_calibrator(
        tasks / "tiny.calibration.json", tiny_student.path, unsure.threshold
    )
    teacher = (
        f'[teacher]\nprovider = "anthropic"\nmodel = "claude-test"\nbase_url = "{sim.url}"\n'
        f'api_key_env = "{KEY_ENV}"\n'
    )
    write_task(tasks, tiny_student.path, "banking77", f'calibrator = "{calibrator}"\n{teacher}')
    (tasks / "ticket.schema.json").write_text(json.dumps(SCHEMA))
    (tasks / "tickets.toml").write_text(
        f'student = "{tiny_student.path}"\nanswer_schema_file = "ticket.schema.json"\n'
        f"[generation]\nmax_tokens = 48\n"
    )
    # Both tasks serve one student folder with the same settings on one vLLM engine each;
    # the engine section goes after the task's own lines.
    for name in ("banking77.toml", "tickets.toml"):
        path = tasks / name
        path.write_text(path.read_text() + engine)
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, "test-key")
    yield run_gateway(Settings(tasks_dir=Path(tasks)))
    mp.undo()
    sim.stop()


def test_both_routes_answer_the_openai_client(gw: Gateway, unsure: Unsure) -> None:
    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="banking77", messages=[{"role": "user", "content": IN_DOMAIN}], logprobs=True
    )
    assert raw.headers["x-distillgate-route"] == "student"
    done = raw.parse()
    assert done.choices[0].message.content == "card_arrival"
    entries = done.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == "card_arrival"

    raw = client.chat.completions.with_raw_response.create(
        model="banking77", messages=[{"role": "user", "content": unsure.prompt}], logprobs=True
    )
    assert raw.headers["x-distillgate-route"] == "teacher"
    done = raw.parse()
    assert done.choices[0].message.content == unsure.teacher_answer()
    # the teacher's answer scored by the student through vLLM's prompt logprobs
    entries = done.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == unsure.teacher_answer()
    assert all(e.logprob <= 0 for e in entries) and sum(e.logprob for e in entries) < 0


@pytest.mark.parametrize("route", ["student", "teacher"])
def test_streaming_on_both_routes(gw: Gateway, unsure: Unsure, route: str) -> None:
    text = IN_DOMAIN if route == "student" else unsure.prompt
    client = gw.client()
    with client.chat.completions.with_streaming_response.create(
        model="banking77", messages=[{"role": "user", "content": text}], stream=True
    ) as response:
        assert response.headers["x-distillgate-route"] == route
        chunks = list(response.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ("card_arrival" if route == "student" else unsure.teacher_answer())
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_answer_on_vllm(gw: Gateway) -> None:
    done = gw.client().completions.create(model="banking77", prompt=IN_DOMAIN, logprobs=2)
    assert done.choices[0].text == "card_arrival"
    assert done.choices[0].logprobs is not None


def test_the_answer_schema_holds_on_any_prompt(gw: Gateway) -> None:
    """vLLM's guidance backend constrains a student never trained on JSON: every answer is
    a valid record, for fuzzed prompts too, with response_format or without."""
    client = gw.client()
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " éü€"
    prompts = ["where is my card", "rate for euros?", 'zq }{ " xv']
    prompts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(20)]
    for i, text in enumerate(prompts):
        fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}}
        done = client.chat.completions.create(
            model="tickets",
            messages=[{"role": "user", "content": text}],
            **({"response_format": fmt} if i % 2 else {}),
        )
        choice = done.choices[0]
        assert choice.finish_reason == "stop", (text, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content or ""), SCHEMA)


def test_a_vllm_task_is_calibrated_on_the_confidence_vllm_serves(
    tiny_student, run_gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`distillgate calibrate` replays a vLLM task on vLLM (top-k log-probabilities, as
    served), so the confidence it fitted T and the threshold on is the one the gateway
    serves for the same prompt; and a calibrator fitted for another student is refused."""
    examples = tiny_student.test[:60]
    data = tmp_path / "calibration.jsonl"
    write_examples(data, examples)
    tasks = tmp_path / "tasks"
    calibrator = tmp_path / "vllm.calibration.json"
    write_task(tasks, tiny_student.path, extra=f'calibrator = "{calibrator}"\n' + ENGINE)
    monkeypatch.setenv("DISTILLGATE_TASKS_DIR", str(tasks))
    main(["calibrate", "--task", "banking77", "--data", str(data)])
    calibration = load_calibration(calibrator, student_dir=tiny_student.path)

    task = load_tasks(tasks)["banking77"]
    scored = asyncio.run(
        score_set(
            task.student, examples, max_tokens=24, prompt=task.prompt, engine=replay_engine(task)
        )
    )
    fitted_on = sequence_confidence(scored.greedy, calibration.temperature)

    gw = run_gateway(Settings(tasks_dir=tasks, allow_force_route=True))
    client = gw.client()
    for example, expected in list(zip(examples, fitted_on, strict=True))[:20]:
        raw = client.chat.completions.with_raw_response.create(
            model="banking77",
            messages=[{"role": "user", "content": example.prompt or ""}],
            extra_headers={"x-distillgate-force-route": "student"},
        )
        assert float(raw.headers["x-distillgate-confidence"]) == pytest.approx(expected, abs=2e-4)

    # The same task with a calibrator fitted for another student does not start.
    save_calibration(
        dataclasses.replace(calibration, student_fingerprint="sha256:other"), calibrator
    )
    app = create_app(Settings(tasks_dir=tasks))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ValueError, match="recalibrate"):
        asyncio.run(start())


def test_a_loop_round_on_vllm_is_judged_there_and_served_without_a_restart(
    tiny_student, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Cold start on a vLLM task: the teacher answers; a round trains a candidate, calibrates
    and gates it on vLLM (the task's engine) and promotes it; the running gateway follows
    the registry and serves it on vLLM, with no restart."""
    gate = tmp_path / "gate.jsonl"
    write_examples(gate, per_label(DATA / "test.jsonl", LABELS, 0, 40))
    loop = f"min_pairs = 50\ntrainer = '{TRAINER}'\neval_data = \"{gate}\"\n"
    routing = "[routing]\ntarget_accuracy = 0.85\ndelta = 0.1\n[capture]\nholdout_share = 0.4\n"
    tasks = loop_task(tmp_path, loop=loop, teacher=tiny_student, extra=routing + ENGINE)
    gw = run_gateway(Settings(tasks_dir=tasks, loop="off", registry_poll_s=0.5, redis_url=""))
    client = gw.client()

    def ask() -> dict[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="banking77", messages=[{"role": "user", "content": IN_DOMAIN}]
        )
        return dict(raw.headers)

    assert ask()["x-distillgate-route"] == "teacher"  # no student yet

    task = load_tasks(tasks)["banking77"]
    assert task.loop is not None
    registry = Registry(task.loop.registry, task.name)
    records = [
        captured(e.prompt or "", e.answer) for e in per_label(DATA / "train.jsonl", LABELS, 0, 70)
    ]
    report = asyncio.run(run_round(task, registry, records, trainer_for(task), trigger="test"))
    assert report.outcome == "promoted", report.reason

    deadline = time.monotonic() + 120  # the reload starts a vLLM engine
    while (headers := ask())["x-distillgate-student"] != report.candidate:
        assert time.monotonic() < deadline, headers
        time.sleep(1)
    assert headers["x-distillgate-route"] in {"student", "teacher"}
