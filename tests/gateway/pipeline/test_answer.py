"""The whole pipeline on fakes (no model, no server, no Redis): every route, reason and
failure policy, the client's limits, capture and audit. The fast tier."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from calibration import Calibration
from gateway.budgets import TeacherBudgets
from gateway.capture import CaptureRecorder, Spool
from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.errors import BudgetSpent, EngineUnavailable, TeacherTimeout
from gateway.keys import ClientKey
from gateway.pipeline.answer import Pipeline
from gateway.pipeline.audit import AuditTracker
from gateway.pipeline.base import Answer
from gateway.pipeline.decision import Reason, Route
from gateway.pipeline.deployment import CandidateRuntime, TaskRuntime
from gateway.pipeline.reply import ReplyOptions
from gateway.tasks import CachePolicy, CapturePolicy, RoutingPolicy, Task, TeacherConfig
from gateway.testing import FakeEngine, FakeTeacher, MemorySink, MemoryTeacherCache

T = TypeVar("T")
LABELS = ("card_arrival", "exchange_rate", "Refund_not_showing_up")
SURE, UNSURE, OFF_TASK = "where is my card", "hmm", "tell me a joke"
SURE_A = "card_arrival"
ANSWERS = {
    SURE: (SURE_A, 0.99),  # three pieces at 0.99 each: confidence ~0.97
    UNSURE: ("exchange_rate", 0.5),  # ~0.125
    OFF_TASK: ("a_joke", 0.99),  # confident, but not an allowed answer
}

# A structured task's answers: JSON of this schema, each piece at 0.999 (confident).
SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": ["GetWeather"]}, "slots": {"type": "object"}},
    "required": ["intent", "slots"],
    "additionalProperties": False,
}
FITS, MISFITS, BROKEN = "weather in paris", "book a table", "cut short"
STRUCTURED = {
    FITS: ('{"intent":"GetWeather","slots":{"city":"paris"}}', 0.999),
    MISFITS: ('{"intent":"BookRestaurant","slots":{}}', 0.999),  # not in the enum
    BROKEN: ('{"intent":"GetWeather","slots":{', 0.999),  # not JSON
}


class Observed:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def student_answered(self, task: str, seconds: float, confidence: float) -> None:
        self.events.append(("student", task))

    def served(self, task: str, key: str, route: str, saved_usd: float) -> None:
        self.events.append(("served", key, route, saved_usd))

    def escalated(self, task: str, reason: str) -> None:
        self.events.append(("escalated", reason))

    def teacher_answered(self, task: str, purpose: str, **kw: Any) -> None:
        self.events.append(("teacher", purpose, kw["cost_usd"]))

    def teacher_failed(self, task: str, kind: str) -> None:
        self.events.append(("teacher_failed", kind))

    def cache_looked_up(self, task: str, outcome: str) -> None:
        self.events.append(("cache", outcome))

    def budget_refused(self, budget: str, purpose: str) -> None:
        self.events.append(("budget_refused", budget, purpose))

    def decided(self, task: str, version: str, accepted: bool) -> None:
        self.events.append(("decided", version, accepted))

    def audited(self, task: str, version: str, agreed: bool) -> None:
        self.events.append(("audited", version, agreed))

    def judged(self, task: str, outcome: str, cost_usd: float) -> None:
        self.events.append(("judged", outcome, cost_usd))


class World:
    """A pipeline over one task, with its fakes, a recorder into memory and an observer."""

    def __init__(
        self,
        tmp: Path,
        *,
        teacher: FakeTeacher | None,
        audit_rate: float = 0.0,
        schema: dict[str, Any] | None = None,
        cache: MemoryTeacherCache | None = None,
        cache_policy: CachePolicy | None = None,
        teacher_config: TeacherConfig | None = None,
        budgets: TeacherBudgets | None = None,
        **routing: Any,
    ) -> None:
        self.engine = FakeEngine({**ANSWERS, **STRUCTURED})
        self.teacher = teacher
        self.task = Task(
            name="t",
            student=tmp / "s",
            answers=None if schema else LABELS,
            answer_schema=schema,
            routing=RoutingPolicy(**routing),
            capture=CapturePolicy(audit_rate=audit_rate),
            teacher=teacher_config or (TeacherConfig() if cache is not None else None),
            cache=cache_policy or CachePolicy(),
        )
        calibration = Calibration(temperature=1.0, threshold=0.9, student_fingerprint="x")
        self.runtime = TaskRuntime(self.task, self.engine, calibration, teacher)
        self.sink = MemorySink()
        self.recorder = CaptureRecorder(self.sink, Spool(tmp / "spool"))
        self.observed = Observed()
        self.audits = AuditTracker(seed=0)
        self.pipeline = Pipeline(
            {"t": self.runtime},
            recorder=self.recorder,
            audits=self.audits,
            observer=self.observed,
            cache=cache,
            budgets=budgets,
        )

    def run(self, test: Callable[[World], Awaitable[T]]) -> T:
        async def go() -> T:
            await self.recorder.start()
            try:
                return await test(self)
            finally:
                await self.pipeline.aclose()
                await self.recorder.aclose()

        return asyncio.run(go())

    async def ask(self, prompt: str, **kw: Any) -> Answer:
        gen = GenerationRequest("r", SamplingParams(max_tokens=24), (Message("user", prompt),))
        return await self.pipeline.answer(self.runtime, gen, **kw)

    @property
    def captured(self) -> list[tuple[str, str]]:
        return sorted((r.route, r.reason) for r in self.sink.records.values())


def tenant_key(tenant: str, **budgets: float) -> ClientKey:
    return ClientKey(f"{tenant}-app", b"\0" * 32, tenant=tenant, **budgets)  # type: ignore[arg-type]


def world(tmp_path: Path, teacher: FakeTeacher | None = None, **options: Any) -> World:
    return World(tmp_path, teacher=teacher or FakeTeacher("Refund_not_showing_up"), **options)


def test_a_confident_valid_answer_is_the_students(tmp_path: Path) -> None:
    w = world(tmp_path)
    answer = w.run(lambda w: w.ask(SURE))
    assert (answer.route, answer.reason, answer.text) == (Route.STUDENT, Reason.CONFIDENT, SURE_A)
    assert answer.confidence == pytest.approx(0.99**3)
    assert answer.completion_tokens == 3 and answer.finish_reason == "stop"
    assert answer.tokens is not None and not any(t.end for t in answer.tokens)
    assert w.teacher is not None and w.teacher.requests == []
    assert w.captured == [] and ("served", "", "student", 0.0) in w.observed.events


@pytest.mark.parametrize(
    ("prompt", "reason"), [(UNSURE, Reason.LOW_CONFIDENCE), (OFF_TASK, Reason.INVALID_ANSWER)]
)
def test_unsure_or_invalid_answers_go_to_the_teacher_and_are_captured(
    tmp_path: Path, prompt: str, reason: Reason
) -> None:
    w = world(tmp_path)
    answer = w.run(lambda w: w.ask(prompt))
    assert (answer.route, answer.reason) == (Route.TEACHER, reason)
    assert answer.text == "Refund_not_showing_up" and answer.teacher_usage == (100, 21)
    assert answer.prompt_tokens == w.engine.prompt_tokens  # the student's count, both routes
    assert answer.completion_tokens == 7  # the teacher's text in the student's pieces
    assert w.captured == [("teacher", reason.value)]
    assert ("escalated", reason.value) in w.observed.events
    assert any(e[0] == "teacher" and e[2] > 0 for e in w.observed.events)  # its cost


def test_a_structured_answer_that_does_not_fit_the_schema_escalates(tmp_path: Path) -> None:
    teacher = FakeTeacher('{"intent":"GetWeather","slots":{}}')
    w = World(tmp_path, teacher=teacher, schema=SCHEMA)
    fits = w.run(lambda w: w.ask(FITS))
    assert (fits.route, fits.reason) == (Route.STUDENT, Reason.CONFIDENT)
    for prompt in (MISFITS, BROKEN):
        w = World(tmp_path / prompt, teacher=teacher, schema=SCHEMA)
        answer = w.run(lambda w, prompt=prompt: w.ask(prompt))  # type: ignore[misc]
        assert (answer.route, answer.reason) == (Route.TEACHER, Reason.INVALID_ANSWER)
        assert answer.confidence > 0.9  # confident, and still not a valid answer
        assert w.captured == [("teacher", "invalid_answer")]
        (record,) = w.sink.records.values()
        expected = {"intent", "slots"} if prompt == MISFITS else set()  # BROKEN: not JSON
        assert set(record.student_fields) == expected
        assert all(0.9 < c <= 1.0 for c in record.student_fields.values())


def test_a_teacher_answer_outside_the_schema_is_a_teacher_failure(tmp_path: Path) -> None:
    w = World(tmp_path, teacher=FakeTeacher('{"intent":"Nope"}'), schema=SCHEMA)
    answer = w.run(lambda w: w.ask(MISFITS))
    assert answer.route == Route.STUDENT_FALLBACK  # the task's policy: the student answers
    assert "does not fit" in (answer.teacher_error or "")
    (record,) = w.sink.records.values()
    assert record.teacher_error and record.teacher_answer is None  # never training data


def test_a_failed_teacher_falls_back_to_the_student(tmp_path: Path) -> None:
    w = world(tmp_path, FakeTeacher("x", error=TeacherTimeout("slow")))
    answer = w.run(lambda w: w.ask(UNSURE))
    assert (answer.route, answer.text) == (Route.STUDENT_FALLBACK, "exchange_rate")
    assert answer.teacher_error == "slow"
    assert w.captured == [("student-fallback", "low_confidence")]
    assert ("teacher_failed", "teacher_timeout") in w.observed.events


def test_a_failed_teacher_is_an_error_when_the_task_says_so(tmp_path: Path) -> None:
    w = world(tmp_path, FakeTeacher("x", error=TeacherTimeout("slow")), on_teacher_failure="error")
    with pytest.raises(TeacherTimeout):
        w.run(lambda w: w.ask(UNSURE))
    assert w.captured == [("student-fallback", "low_confidence")]  # the record is kept


def test_a_failed_student_is_an_error_or_the_teachers_turn(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.engine.fail = True
    with pytest.raises(EngineUnavailable):
        w.run(lambda w: w.ask(SURE))
    w = world(tmp_path / "b", on_student_failure="teacher")
    w.engine.fail = True
    answer = w.run(lambda w: w.ask(SURE))
    assert (answer.route, answer.reason) == (Route.TEACHER, Reason.STUDENT_FAILED)
    assert w.captured == [("teacher", "student_failed")]


def test_without_a_teacher_the_student_answers_everything(tmp_path: Path) -> None:
    w = World(tmp_path, teacher=None)
    answer = w.run(lambda w: w.ask(UNSURE))
    assert (answer.route, answer.reason) == (Route.STUDENT, Reason.NO_TEACHER)
    assert w.captured == []


@pytest.mark.parametrize("forced", ["student", "teacher"])
def test_a_forced_route_is_taken(tmp_path: Path, forced: str) -> None:
    w = world(tmp_path)
    answer = w.run(lambda w: w.ask(SURE if forced == "teacher" else UNSURE, forced=forced))
    assert answer.route.value == forced and answer.reason == Reason.FORCED


def test_the_clients_limits_cut_what_is_served_not_the_decision(tmp_path: Path) -> None:
    w = world(tmp_path)

    async def both(w: World) -> tuple[Answer, Answer, Answer]:
        return (
            await w.ask(SURE, options=ReplyOptions(max_tokens=1)),
            await w.ask(SURE, options=ReplyOptions(stop=("_",))),
            await w.ask(UNSURE, options=ReplyOptions(max_tokens=1, stop=("!",))),
        )

    short, stopped, taught = w.run(both)
    assert (short.route, short.text, short.finish_reason) == (Route.STUDENT, "card", "length")
    assert short.confidence == pytest.approx(0.99**3)  # decided on the whole answer
    assert (stopped.route, stopped.text, stopped.finish_reason) == (Route.STUDENT, "card", "stop")
    assert (taught.route, taught.text, taught.finish_reason) == (Route.TEACHER, "Refund", "length")
    assert w.teacher is not None
    asked = w.teacher.requests[-1]
    assert (asked.max_tokens, asked.stop) == (1, ("!",))  # the teacher is asked within them
    # the student always ran under the task's own limits
    assert all(r.sampling.max_tokens == 24 and not r.sampling.stop for r in w.engine.requests)


def test_logprobs_on_the_teacher_route_are_the_students_teacher_forced(tmp_path: Path) -> None:
    w = world(tmp_path)
    answer = w.run(lambda w: w.ask(UNSURE, options=ReplyOptions(logprobs=True)))
    assert answer.tokens is not None
    assert "".join(t.text for t in answer.tokens) == answer.text
    assert all(t.logprob == pytest.approx(math.log(0.5)) for t in answer.tokens)


def test_an_accepted_answer_is_audited_in_the_background(tmp_path: Path) -> None:
    w = world(tmp_path, FakeTeacher(SURE_A), audit_rate=1.0)
    answer = w.run(lambda w: w.ask(SURE))
    assert answer.route == Route.STUDENT
    assert w.captured == [("audit", "audit")]
    assert w.audits.agreement("t").rate == 1.0
    assert ("audited", "static", True) in w.observed.events
    assert w.teacher is not None and w.teacher.requests[0].stop == ()  # the whole answer


def test_with_no_student_yet_the_teacher_answers_and_everything_is_captured(
    tmp_path: Path,
) -> None:
    w = world(tmp_path)
    w.runtime.engine = None  # cold start
    answer = w.run(lambda w: w.ask(SURE))
    assert (answer.route, answer.reason) == (Route.TEACHER, Reason.NO_STUDENT)
    assert answer.text == "Refund_not_showing_up" and answer.teacher_usage == (100, 21)
    assert answer.prompt_tokens == 100 and answer.completion_tokens == 21  # the teacher's count
    assert w.captured == [("teacher", "no_student")]
    (record,) = w.sink.records.values()
    assert record.student_version == "none" and record.student_answer == ""
    assert ("escalated", "no_student") in w.observed.events


def test_with_no_student_and_a_failing_teacher_the_client_gets_the_teachers_error(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, FakeTeacher("x", error=TeacherTimeout("slow")))
    w.runtime.engine = None
    with pytest.raises(TeacherTimeout):
        w.run(lambda w: w.ask(SURE))


def test_with_no_student_and_no_teacher_the_task_is_unavailable(tmp_path: Path) -> None:
    w = World(tmp_path, teacher=None)
    w.runtime.engine = None
    with pytest.raises(EngineUnavailable, match="no student and no teacher"):
        w.run(lambda w: w.ask(SURE))


def test_records_name_the_version_that_decided(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.runtime.student_version = "v0007"
    w.run(lambda w: w.ask(UNSURE))
    (record,) = w.sink.records.values()
    assert record.student_version == "v0007"


def with_candidate(
    w: World, stage: str, share: float, answers: dict[str, tuple[str, float]]
) -> FakeEngine:
    """A candidate on trial beside the serving student (as ``build_deployment`` attaches it)."""
    engine = FakeEngine(answers)
    calibration = Calibration(temperature=1.0, threshold=0.9, student_fingerprint="y")
    candidate = TaskRuntime(w.task, engine, calibration, w.teacher, student_version="v0002")
    w.runtime.student_version = "v0001"
    w.runtime.trial = CandidateRuntime(stage, share, candidate)
    return engine


def test_a_canary_serves_its_share_and_names_itself(tmp_path: Path) -> None:
    w = world(tmp_path)
    # The candidate is sure where the serving student is not.
    engine = with_candidate(w, "canary", 0.5, {UNSURE: ("exchange_rate", 0.99)})

    async def many(w: World) -> list[Answer]:
        return [await w.ask(UNSURE) for _ in range(200)]

    answers = w.run(many)
    by_version = {v: [a for a in answers if a.student_version == v] for v in ("v0001", "v0002")}
    assert 70 <= len(by_version["v0002"]) <= 130  # a fair coin, 200 throws
    assert {a.route for a in by_version["v0002"]} == {Route.STUDENT}
    assert {a.route for a in by_version["v0001"]} == {Route.TEACHER}
    assert len(engine.requests) == len(by_version["v0002"])
    escalated = [r for r in w.sink.records.values() if r.route == "teacher"]
    assert {r.student_version for r in escalated} == {"v0001"}
    decided = [e[1:] for e in w.observed.events if e[0] == "decided"]
    assert decided.count(("v0002", True)) == len(by_version["v0002"])  # metrics by version
    assert decided.count(("v0001", False)) == len(by_version["v0001"])


def test_a_shadow_answers_off_the_request_path_and_is_scored_against_the_teacher(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, FakeTeacher(SURE_A))
    engine = with_candidate(
        w, "shadow", 1.0, {SURE: (SURE_A, 0.99), UNSURE: ("exchange_rate", 0.2)}
    )

    async def two(w: World) -> list[Answer]:
        return [await w.ask(SURE), await w.ask(UNSURE)]

    served = w.run(two)
    assert [a.student_version for a in served] == ["v0001", "v0001"]  # the client never sees it
    assert [a.route for a in served] == [Route.STUDENT, Route.TEACHER]
    assert len(engine.requests) == 2
    shadows = sorted(
        (r.reason, r.student_answer, r.teacher_answer, r.student_version)
        for r in w.sink.records.values()
        if r.route == "shadow"
    )
    assert shadows == [
        ("confident", SURE_A, SURE_A, "v0002"),
        ("low_confidence", "exchange_rate", SURE_A, "v0002"),
    ]
    shadow_calls = [e for e in w.observed.events if e[:2] == ("teacher", "shadow")]
    assert len(shadow_calls) == 2  # its teacher calls are priced apart


def test_a_failing_shadow_costs_the_client_nothing(tmp_path: Path) -> None:
    w = world(tmp_path)
    engine = with_candidate(w, "shadow", 1.0, {})
    engine.fail = True
    answer = w.run(lambda w: w.ask(SURE))
    assert (answer.route, answer.student_version) == (Route.STUDENT, "v0001")
    assert not [r for r in w.sink.records.values() if r.route == "shadow"]


def test_a_prompt_escalated_again_is_answered_from_the_cache(tmp_path: Path) -> None:
    cache = MemoryTeacherCache()
    w = World(tmp_path, teacher=FakeTeacher("Refund_not_showing_up"), cache=cache)

    async def twice(w: World) -> tuple[Answer, Answer]:
        first = await w.ask(UNSURE, caller=tenant_key("acme"))
        await asyncio.sleep(0)  # the store runs off the request path
        return first, await w.ask(UNSURE, caller=tenant_key("acme"))

    first, second = w.run(twice)
    assert (first.route, second.route) == (Route.TEACHER, Route.CACHE)
    assert second.text == first.text and second.reason == Reason.LOW_CONFIDENCE
    assert second.teacher_usage is None  # nothing paid
    assert w.teacher is not None and len(w.teacher.requests) == 1
    assert w.captured == [("teacher", "low_confidence")]  # one label, captured once
    looked = [e for e in w.observed.events if e[0] == "cache"]
    assert [e[1] for e in looked] == ["miss", "hit"]
    served = [e for e in w.observed.events if e[0] == "served"]
    assert served[1][1:3] == ("acme-app", "cache") and served[1][3] > 0  # money saved


def test_one_tenants_cached_answer_is_never_anothers(tmp_path: Path) -> None:
    w = World(tmp_path, teacher=FakeTeacher("Refund_not_showing_up"), cache=MemoryTeacherCache())

    async def two_tenants(w: World) -> list[Route]:
        routes = [(await w.ask(UNSURE, caller=tenant_key("acme"))).route]
        await asyncio.sleep(0)
        routes.append((await w.ask(UNSURE, caller=tenant_key("globex"))).route)
        await asyncio.sleep(0)
        routes.append((await w.ask(UNSURE, caller=tenant_key("globex"))).route)
        return routes

    assert w.run(two_tenants) == [Route.TEACHER, Route.TEACHER, Route.CACHE]
    shared = World(
        tmp_path / "shared",
        teacher=FakeTeacher("Refund_not_showing_up"),
        cache=MemoryTeacherCache(),
        cache_policy=CachePolicy(scope="task"),
    )
    assert shared.run(two_tenants) == [Route.TEACHER, Route.CACHE, Route.CACHE]


def test_what_the_cache_never_holds_or_serves(tmp_path: Path) -> None:
    """An answer that fails the task's check; a task that turns the cache off; a cache that
    does not answer (a miss, never an error)."""
    invalid = MemoryTeacherCache()
    w = World(tmp_path, teacher=FakeTeacher("not_a_label"), cache=invalid)
    w.run(lambda w: w.ask(UNSURE))
    assert invalid.entries == {}
    off = MemoryTeacherCache()
    w = World(
        tmp_path / "off",
        teacher=FakeTeacher("Refund_not_showing_up"),
        cache=off,
        cache_policy=CachePolicy(enabled=False),
    )
    w.run(lambda w: w.ask(UNSURE))
    assert off.entries == {} and not any(e[0] == "cache" for e in w.observed.events)
    down = World(
        tmp_path / "down",
        teacher=FakeTeacher("Refund_not_showing_up"),
        cache=MemoryTeacherCache(down=True),
    )
    answer = down.run(lambda w: w.ask(UNSURE))
    assert answer.route == Route.TEACHER
    assert ("cache", "unavailable") in down.observed.events


# -- teacher budgets ---------------------------------------------------------------------
# FakeTeacher's answer costs (100 input, 21 output tokens) $0.000205 at the default prices:
# a $0.0005 budget pays for three calls (spent 0, 0.000205, 0.00041 < 0.0005), not a fourth.
CALL_USD = 0.000205


def budgeted(tmp_path: Path, **config: Any) -> World:
    kw = {k: config.pop(k) for k in ("cache", "teacher") if k in config}
    return world(tmp_path, teacher_config=TeacherConfig(**config), budgets=TeacherBudgets(), **kw)


def test_a_spent_key_budget_serves_the_students_answer_naming_the_budget(tmp_path: Path) -> None:
    w = budgeted(tmp_path)
    key = tenant_key("acme", teacher_usd_per_day=0.0005)

    async def five(w: World) -> list[Answer]:
        return [await w.ask(UNSURE, caller=key) for _ in range(5)]

    answers = w.run(five)
    assert [a.route for a in answers] == [Route.TEACHER] * 3 + [Route.STUDENT_FALLBACK] * 2
    spent = answers[-1]
    assert spent.text == "exchange_rate" and spent.budget_spent == "key:acme-app:day"
    assert spent.teacher_error is not None and "$0.0005" in spent.teacher_error
    assert w.teacher is not None and len(w.teacher.requests) == 3
    refused = [e for e in w.observed.events if e[0] == "budget_refused"]
    assert refused == [("budget_refused", "key:acme-app:day", "escalation")] * 2
    # the hard prompts are kept for labelling later, with why the teacher was not asked
    assert w.captured.count(("student-fallback", "low_confidence")) == 2
    assert w.pipeline.budgets is not None
    (figures,) = w.pipeline.budgets.snapshot([figures_budget(key)])
    assert abs(figures.spent_usd - 3 * CALL_USD) < 1e-12 and figures.held_usd == 0


def figures_budget(key: ClientKey) -> Any:
    from gateway.budgets import budgets_of

    task = Task(name="t", student=Path("s"), answers=LABELS)
    (budget,) = budgets_of(task, key)
    return budget


def test_other_keys_and_accepted_answers_are_not_stopped_by_a_spent_budget(
    tmp_path: Path,
) -> None:
    w = budgeted(tmp_path)
    poor = tenant_key("acme", teacher_usd_per_day=0.0001)  # one call, then spent

    async def run(w: World) -> list[Route]:
        routes = [(await w.ask(UNSURE, caller=poor)).route for _ in range(2)]
        routes.append((await w.ask(SURE, caller=poor)).route)  # the student's own answer
        routes.append((await w.ask(UNSURE, caller=tenant_key("globex"))).route)  # no budget
        return routes

    assert w.run(run) == [Route.TEACHER, Route.STUDENT_FALLBACK, Route.STUDENT, Route.TEACHER]


def test_with_on_budget_error_a_spent_budget_is_a_429_naming_it(tmp_path: Path) -> None:
    w = budgeted(tmp_path, on_budget="error", usd_per_day=0.0001)  # the task's own budget

    async def two(w: World) -> BudgetSpent:
        await w.ask(UNSURE)
        with pytest.raises(BudgetSpent) as raised:
            await w.ask(UNSURE)
        return raised.value

    error = w.run(two)
    assert error.status_code == 429 and error.code == "insufficient_quota"
    assert error.budget == "task:t:day" and "task 't'" in error.message
    headers = error.headers()
    assert headers["x-should-retry"] == "false" and int(headers["Retry-After"]) <= 86400


def test_a_cached_answer_is_served_past_a_spent_budget(tmp_path: Path) -> None:
    w = budgeted(tmp_path, cache=MemoryTeacherCache())
    key = tenant_key("acme", teacher_usd_per_day=0.0001)

    async def run(w: World) -> list[Route]:
        first = (await w.ask(UNSURE, caller=key)).route
        await asyncio.sleep(0)  # the store runs off the request path
        return [first, (await w.ask(UNSURE, caller=key)).route]

    assert w.run(run) == [Route.TEACHER, Route.CACHE]  # free: no budget asked


def test_audits_stop_before_escalations_do(tmp_path: Path) -> None:
    # At 0.5 of a $0.0005 budget audits stop (spent 0.00041 >= 0.00025); escalations go on.
    config = TeacherConfig(audits_stop_at=0.5)
    w = world(
        tmp_path,
        FakeTeacher(SURE_A),
        teacher_config=config,
        budgets=TeacherBudgets(),
        audit_rate=1.0,
    )
    key = tenant_key("acme", teacher_usd_per_day=0.0005)

    async def run(w: World) -> list[Route]:
        routes = [(await w.ask(UNSURE, caller=key)).route for _ in range(2)]
        await w.ask(SURE, caller=key)  # accepted: its audit is refused
        await w.pipeline.aclose()
        routes.append((await w.ask(UNSURE, caller=key)).route)
        return routes

    assert w.run(run) == [Route.TEACHER, Route.TEACHER, Route.TEACHER]
    assert ("budget_refused", "key:acme-app:day", "audit") in w.observed.events
    assert not [r for r in w.sink.records.values() if r.route == "audit"]


def test_a_failed_teacher_call_costs_its_budget_nothing(tmp_path: Path) -> None:
    teacher = FakeTeacher("x", error=TeacherTimeout("slow"))
    w = budgeted(tmp_path, teacher=teacher)
    key = tenant_key("acme", teacher_usd_per_day=0.0001)
    answers = w.run(lambda w: w.ask(UNSURE, caller=key))
    assert answers.route == Route.STUDENT_FALLBACK and answers.budget_spent is None
    assert w.pipeline.budgets is not None
    (figures,) = w.pipeline.budgets.snapshot([figures_budget(key)])
    assert figures.spent_usd == 0 and figures.held_usd == 0


def test_a_text_calibrator_decides_on_the_answers_text_features(tmp_path: Path) -> None:
    """A free-text task's calibrator is logistic on the answer's token features: the same
    answer is accepted or escalated as its model's probability clears the threshold."""
    from calibration import LogisticCalibrator, text_features

    def text_calibration(threshold: float) -> Calibration:
        model = LogisticCalibrator().fit([[-0.01, -0.05, 1.0], [-2.0, -3.0, 1.0]] * 5, [1, 0] * 5)
        return Calibration(
            temperature=1.0,
            threshold=threshold,
            student_fingerprint="x",
            feature="text",
            logistic=model.to_json(),
        )

    routes = []
    for threshold in (0.5, 0.999):
        w = world(tmp_path / str(threshold))
        w.runtime.calibration = text_calibration(threshold)
        answer = w.run(lambda w: w.ask(SURE))
        expected = LogisticCalibrator.from_json(text_calibration(threshold).logistic or {})
        logprobs = [d.logprob for d in answer.deltas]
        assert answer.confidence == pytest.approx(expected.predict_one(text_features(logprobs)))
        routes.append(answer.route)
    assert routes == [Route.STUDENT, Route.TEACHER]
