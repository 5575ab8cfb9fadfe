"""The loop's parts alone, no training: round data, the registry, the watch and rollback,
the lease by file lock. The fast tier."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from calibration import Calibration, save_calibration
from gateway.capture.base import CaptureRecord
from gateway.examples import Example
from gateway.jobs.export import is_held_out, normalise_prompt
from gateway.loop.data import round_data, with_labelled
from gateway.loop.lease import Lease
from gateway.loop.lifecycle import Event, State, first_stage
from gateway.loop.registry import Manifest, Registry, served
from gateway.loop.watch import watch_escalation, watch_serving
from gateway.loop.worker import LoopWorker
from gateway.tasks import CapturePolicy, JudgeConfig, LoopPolicy, RoutingPolicy, Task
from tests.gateway.loop.helpers import captured
from tests.loop_fleet import promote

LABELS = ("card_arrival", "exchange_rate")


def task(tmp_path: Path, **loop: object) -> Task:
    return Task(
        name="banking77",
        student=tmp_path / "none",
        answers=LABELS,
        routing=RoutingPolicy(target_accuracy=0.9),
        capture=CapturePolicy(holdout_share=0.5),
        loop=LoopPolicy(registry=tmp_path / "registry", **loop),  # type: ignore[arg-type]
    )


def test_disagreeing_teacher_answers_are_voted_or_dropped(tmp_path: Path) -> None:
    records = [
        captured("where is my card", "card_arrival"),
        captured("Where is  my card", "card_arrival"),  # the same prompt, normalised
        captured("where is my card", "exchange_rate"),  # outvoted 2 to 1
        captured("what rate", "exchange_rate"),
        captured("what rate", "card_arrival"),  # 1 to 1: no majority, dropped
        captured("cut short", "not_a_label"),  # outside the answer set
    ]
    data = round_data(records, task(tmp_path), eval_share=0.5)
    examples = [*data.train, *data.calibrate, *data.evaluate]
    assert [(e.prompt, e.answer) for e in examples] == [("where is my card", "card_arrival")]
    assert data.dropped == {
        "outvoted teacher answer": 1,
        "duplicate prompt": 1,
        "teacher answers disagree, no majority": 2,
        "outside the answer set": 1,
    }


def test_a_free_text_tasks_wordings_do_not_vote_each_is_an_answer(tmp_path: Path) -> None:
    """A judged task: two wordings of one prompt are two training pairs (none dropped as a
    disagreement); a held-out prompt is one example, every wording its references."""
    t = task(tmp_path).model_copy(
        update={"answers": None, "judge": JudgeConfig(rubric="r", function="m:f")}
    )
    prompts = [f"name[Venue {i}], area[riverside]" for i in range(40)]
    records = []
    for p in prompts:
        records += [captured(p, f"{p} by the river."), captured(p, f"By the river: {p}.")]
        records.append(captured(p, f"By the river: {p}."))  # the same wording again
    data = round_data(records, t, eval_share=0.5)
    assert "teacher answers disagree, no majority" not in data.dropped
    assert data.dropped == {"duplicate prompt": 40}
    assert len(data.train) == 2 * len({e.prompt for e in data.train}) > 0
    held = data.calibrate + data.evaluate
    assert held and len(held) + len(data.train) // 2 == 40
    for e in held:  # the wording captured most first
        assert e.answer == f"By the river: {e.prompt}." and len(e.references) == 2
    again = round_data(list(reversed(records)), t, eval_share=0.5)
    assert again.train == data.train and again.calibrate == data.calibrate


def test_structured_teacher_answers_vote_by_value_and_only_valid_ones_are_kept(
    tmp_path: Path,
) -> None:
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["GetWeather"]}, "slots": {"type": "object"}},
        "required": ["intent", "slots"],
    }
    t = task(tmp_path).model_copy(update={"answers": None, "answer_schema": schema})
    paris = '{"intent": "GetWeather", "slots": {"city": "Paris"}}'
    records = [
        captured("weather in paris", paris),
        captured("weather in paris", '{"slots":{"city":"Paris"},"intent":"GetWeather"}'),
        captured("weather in paris", '{"intent":"GetWeather","slots":{"city":"Rome"}}'),
        captured("book a table", '{"intent":"BookRestaurant","slots":{}}'),  # not the schema's
        captured("cut short", '{"intent":"GetWeather",'),  # not JSON
    ]
    data = round_data(records, t, eval_share=0.5)
    examples = [*data.train, *data.calibrate, *data.evaluate]
    # Two of three agree on the value, spelled differently: one pair, written canonically.
    assert [(e.prompt, e.answer) for e in examples] == [
        ("weather in paris", '{"intent":"GetWeather","slots":{"city":"Paris"}}')
    ]
    assert data.dropped == {
        "does not fit the answer schema": 2,
        "outvoted teacher answer": 1,
        "duplicate prompt": 1,
    }


def test_the_three_parts_and_their_order_are_fixed_by_the_prompts(tmp_path: Path) -> None:
    prompts = [f"prompt number {i}" for i in range(400)]
    records = [captured(p, LABELS[i % 2]) for i, p in enumerate(prompts)]
    t = task(tmp_path)
    data = round_data(records, t, eval_share=0.5)
    again = round_data(list(reversed(records)), t, eval_share=0.5)
    for part in ("train", "calibrate", "evaluate"):  # the same parts in the same order
        assert [e.prompt for e in getattr(data, part)] == [e.prompt for e in getattr(again, part)]
    for e in data.train:
        assert not is_held_out(normalise_prompt(e.prompt or ""), 0.5)
    assert 150 < len(data.train) < 250 and 50 < len(data.evaluate) < 150


def make_version(registry: Registry, parent: str | None = None) -> str:
    """A candidate with an (empty) student folder."""
    version = registry.next_version()
    folder = registry.add(Manifest(version, parent, "2026-12-02T00:00:00+00:00"))
    (folder / "student").mkdir()
    return version


def test_labelled_prompts_keep_their_role_when_traffic_asks_them(tmp_path: Path) -> None:
    """A team's test set sent through the gateway is captured like any traffic; the round
    must still never train or calibrate on it, nor train on its calibration set."""
    prompts = [f"prompt number {i}" for i in range(200)]
    data = round_data(
        [captured(p, LABELS[i % 2]) for i, p in enumerate(prompts)], task(tmp_path), eval_share=0.5
    )
    gate = [Example(answer="card_arrival", prompt=p.upper()) for p in prompts[:100]]
    calib = [Example(answer="card_arrival", prompt=p) for p in prompts[100:150]]
    seed = [Example(answer="exchange_rate", prompt="a labelled training prompt")]
    train, calibrate, evaluate = with_labelled(data, train=seed, calibrate=calib, evaluate=gate)
    assert seed[0] in train and set(map(id, gate)) <= set(map(id, evaluate))
    trained = {e.prompt for e in train} - {"a labelled training prompt"}
    assert trained and trained.isdisjoint(prompts[:150])
    assert {e.prompt for e in calibrate}.isdisjoint(prompts[:100])
    captured_eval = [e for e in evaluate if e not in gate]
    assert {e.prompt for e in captured_eval}.isdisjoint(prompts[:100])
    assert len(train) + len(calibrate) + len(evaluate) > len(gate) + len(calib) + len(seed)


def test_the_registry_promotes_rolls_back_and_resolves_the_served_task(tmp_path: Path) -> None:
    t = task(tmp_path)
    registry = Registry(tmp_path / "registry", "banking77")
    assert served(t) is t and registry.serving() is None
    v1 = make_version(registry)
    v2 = make_version(registry, v1)
    assert (v1, v2) == ("v0001", "v0002")
    promote(registry, v1)
    promote(registry, v2)
    resolved = served(t)
    assert resolved.student_version == "v0002"
    assert resolved.student == registry.student_dir("v0002")
    assert resolved.calibrator == registry.calibrator("v0002")
    assert registry.version(v1).state == "retired"
    back = registry.roll_back("agreement fell")
    assert back is not None and back.version == v1
    assert registry.version(v2).state == "bad" and registry.version(v2).reason
    assert registry.roll_back("again") is None  # nothing good left: back to no student
    assert registry.serving() is None and served(t).student_version is None


class History:
    def __init__(self, records: list[CaptureRecord]) -> None:
        self.list, self.problems = records, []

    def records(self, _: Task) -> list[CaptureRecord]:
        return self.list


def test_a_version_whose_audits_disagree_is_rolled_back_by_the_sprt(tmp_path: Path) -> None:
    t = task(tmp_path, min_pairs=10_000)  # no round may run after it: only the rollback
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = make_version(registry)
    v2 = make_version(registry, v1)
    promote(registry, v1)
    promote(registry, v2)
    good = [captured("p", "card_arrival", route="audit", student="card_arrival", version=v1)]
    audits = [
        captured(f"q{i}", "card_arrival", route="audit", student=s, version=v2, at=i)
        for i, s in enumerate(["card_arrival", "exchange_rate", "exchange_rate"] * 20)
    ]
    watch = watch_serving(t, v2, [*good, *audits], target=0.9)
    assert watch.verdict == "fell" and watch.audits < 60
    worker = LoopWorker(t, History([*good, *audits]))  # type: ignore[arg-type]
    asyncio.run(worker.step())
    serving = registry.serving()
    assert serving is not None and serving.version == v1
    assert registry.version(v2).state == "bad" and "SPRT" in registry.version(v2).reason
    # A version whose audits agree stays.
    fine = [
        captured(f"r{i}", "card_arrival", route="audit", student="card_arrival", version=v1)
        for i in range(200)
    ]
    assert watch_serving(t, v1, fine, target=0.9).verdict == "holds"


@pytest.mark.parametrize(
    ("goal", "agreeing", "rolled_back"),
    [
        ({"max_escalation": 0.3}, 0.8, False),  # as right as its calibration measured
        ({"max_escalation": 0.3}, 0.5, True),  # below what it measured
        ({"target_accuracy": 0.97}, 0.8, True),  # the same audits, held to an accuracy goal
    ],
)
def test_a_budget_task_is_watched_on_its_own_goal(
    tmp_path: Path, goal: dict[str, float], agreeing: float, rolled_back: bool
) -> None:
    """A task with an escalation budget asks no accuracy: its serving version is held to the
    accepted accuracy its calibration measured (0.8 here), not to a 0.97 it never asked for."""
    t = task(tmp_path, min_pairs=10_000).model_copy(update={"routing": RoutingPolicy(**goal)})
    registry = Registry(tmp_path / "registry", "banking77")
    v1, v2 = make_version(registry), make_version(registry)
    for version in (v1, v2):
        promote(registry, version)
        measured = Calibration(1.0, 0.5, "x", metrics_after={"accepted_accuracy": 0.8})
        save_calibration(measured, registry.calibrator(version))
    rng = random.Random(0)
    audits = [
        captured(
            f"q{i}", "card_arrival", route="audit", version=v2,
            student="card_arrival" if rng.random() < agreeing else "exchange_rate",
        )
        for i in range(400)
    ]  # fmt: skip
    asyncio.run(LoopWorker(t, History(audits)).step())  # type: ignore[arg-type]
    assert (registry.version(v2).state == State.BAD) is rolled_back


def test_one_worker_per_task_holds_the_lease(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", "banking77")

    async def both() -> tuple[bool, bool, bool]:
        async with (
            Lease(None, registry, "banking77").take() as first,
            Lease(None, registry, "banking77").take() as second,
        ):
            pass
        async with Lease(None, registry, "banking77").take() as after:
            pass
        return first, second, after

    assert asyncio.run(both()) == (True, False, True)


def test_a_candidate_goes_from_shadow_through_canary_steps_to_serving(tmp_path: Path) -> None:
    t = task(tmp_path, min_pairs=10_000, shadow_share=0.2, canary_steps=(0.1, 0.5))
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = make_version(registry)
    v2 = make_version(registry, v1)
    promote(registry, v1)
    registry.pass_gate(v2, first_stage(t.loop, v2, since=100.0), "passed", {})  # type: ignore[arg-type]
    assert served(t).trial is not None and served(t).trial.label == "v0002 shadow 0.2"  # type: ignore[union-attr]
    clock = [200.0]
    records: list[CaptureRecord] = []
    worker = LoopWorker(t, History(records), clock=lambda: clock[0])  # type: ignore[arg-type]

    def evidence(route: str, n: int, at: float, **kw: str) -> None:
        records.extend(
            captured(
                f"{route}{at}{i}",
                "card_arrival",
                route=route,
                student="card_arrival",  # type: ignore[arg-type]
                version=v2,
                at=at,
                **kw,
            )
            for i in range(n)
        )

    evidence("shadow", 200, at=50.0, reason="confident")  # before the trial: not evidence
    evidence("shadow", 200, at=150.0, reason="low_confidence")  # it would have escalated them
    asyncio.run(worker.step())
    assert registry.trial().stage == "shadow"  # type: ignore[union-attr]
    evidence("shadow", 200, at=150.0, reason="confident")
    asyncio.run(worker.step())
    trial = registry.trial()
    assert trial is not None and (trial.stage, trial.share, trial.since) == ("canary", 0.1, 200.0)
    clock[0] = 300.0
    asyncio.run(worker.step())  # the shadow's evidence does not count for the canary
    assert registry.trial().share == 0.1  # type: ignore[union-attr]
    evidence("audit", 200, at=250.0)
    asyncio.run(worker.step())
    assert registry.trial().share == 0.5  # type: ignore[union-attr]
    evidence("audit", 200, at=350.0)
    asyncio.run(worker.step())
    serving = registry.serving()
    assert registry.trial() is None and serving is not None and serving.version == v2
    assert registry.version(v2).promoted_at and registry.version(v1).state == "retired"
    decisions = [r["outcome"] for r in registry.rounds() if r.get("kind") == "trial"]
    assert decisions == ["canary 0.1", "canary 0.5", "promoted"]


def test_a_candidate_that_disagrees_on_trial_is_rejected_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    t = task(tmp_path, min_pairs=10_000, canary_steps=(0.2,))
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = make_version(registry)
    v2 = make_version(registry, v1)
    promote(registry, v1)
    registry.pass_gate(v2, first_stage(t.loop, v2, since=0.0), "passed", {})  # type: ignore[arg-type]
    audits = [
        captured(f"q{i}", "card_arrival", route="audit", student=s, version=v2, at=1.0)
        for i, s in enumerate(["card_arrival", "exchange_rate"] * 30)
    ]
    asyncio.run(LoopWorker(t, History(audits)).step())  # type: ignore[arg-type]
    assert registry.trial() is None and served(t).trial is None
    assert registry.serving().version == v1  # type: ignore[union-attr]
    version = registry.version(v2)
    assert version.state == State.REJECTED and "canary" in version.reason
    assert "SPRT" in version.reason and version.transitions[-1].event == Event.STAGE_FALLS


def test_escalating_more_than_the_calibrator_expects_is_drift(tmp_path: Path) -> None:
    """Accepted answers are not captured, but 2 % of them are audited: among a version's
    records, escalations outnumber audits by a known ratio. The calibrator expects 20 %
    escalation (200 escalations to 16 audits per 1,000 requests); at 50 % it is 500 to 10."""
    t = task(tmp_path, min_pairs=10_000)
    registry = Registry(tmp_path / "registry", "banking77")
    v1 = make_version(registry)
    promote(registry, v1)
    calibration = Calibration(1.0, 0.5, "x", metrics_after={"coverage": 0.8})
    save_calibration(calibration, registry.calibrator(v1))

    def traffic(escalations: int, audits: int, thousands: int) -> list[CaptureRecord]:
        """As they arrive: interleaved at random."""
        out: list[CaptureRecord] = []
        for k in range(thousands):
            out += [
                captured(f"e{k}-{i}", "card_arrival", version=v1, reason="low_confidence")
                for i in range(escalations)
            ]
            out += [
                captured(
                    f"a{k}-{i}", "card_arrival", route="audit", student="card_arrival", version=v1
                )
                for i in range(audits)
            ]
        return random.Random(0).sample(out, len(out))

    steady = LoopWorker(t, History(traffic(200, 16, 5)))  # type: ignore[arg-type]
    assert steady._drift(steady.history.records(t)) is None  # type: ignore[arg-type]
    drifted = LoopWorker(t, History(traffic(500, 10, 5)))  # type: ignore[arg-type]
    reason = drifted._drift(drifted.history.records(t))  # type: ignore[arg-type]
    assert reason is not None and reason.startswith("drift: v0001 escalates more")
    assert watch_escalation(t, v1, 0.2, traffic(500, 10, 5)).verdict == "fell"
    assert watch_escalation(t, v1, 0.2, traffic(200, 16, 5)).verdict != "fell"


def test_before_a_first_student_a_round_continues_the_last_too_weak_candidate(
    tmp_path: Path,
) -> None:
    from calibration import NOTHING_ACCEPTED
    from gateway.loop.round import _weak_candidate

    registry = Registry(tmp_path / "registry", "banking77")
    assert _weak_candidate(registry) is None
    version = make_version(registry)
    (registry.student_dir(version) / "config.json").write_text("{}")
    registry.reject(version, Event.GATE_FAILED, NOTHING_ACCEPTED, {"promote": False})
    assert _weak_candidate(registry) == registry.student_dir(version)
    # A round that failed to build its candidate does not hide the weak one.
    broken = make_version(registry)
    registry.reject(broken, Event.BUILD_FAILED, "training failed: killed")
    assert _weak_candidate(registry) == registry.student_dir(version)
    # A candidate rejected for wrong answers is not built on.
    wrong = make_version(registry)
    registry.reject(wrong, Event.GATE_FAILED, "accepted answers' error bound 0.2 > 0.03", {})
    assert _weak_candidate(registry) is None


def test_with_one_answer_or_too_little_data_no_round_runs_and_the_status_says_why(
    tmp_path: Path,
) -> None:
    from gateway.loop.status import loop_status

    t = task(tmp_path, min_pairs=10, min_new_pairs=1)
    same = [captured(f"where is card {i}", "card_arrival") for i in range(40)]
    report = asyncio.run(LoopWorker(t, History(same)).step())  # type: ignore[arg-type]
    assert report is not None and report.outcome == "skipped"
    assert report.reason == "the training data is all one answer"
    few = [*same[:4], captured("what rate", "exchange_rate")]
    t2 = task(tmp_path / "other", min_pairs=10)
    report = asyncio.run(LoopWorker(t2, History(few)).step())  # type: ignore[arg-type]
    assert report is None  # fewer than min_pairs captured, no labelled set: not even due
    t3 = task(tmp_path / "third", min_pairs=10, min_new_pairs=1)
    mixed = [captured(f"p{i}", LABELS[i % 2]) for i in range(12)]
    worker = LoopWorker(t3, History(mixed))  # type: ignore[arg-type]
    for _ in range(3):  # polled again and again: the reason is recorded once
        report = asyncio.run(worker.step())
    assert report is not None and report.reason.startswith("too little data")
    rounds = loop_status(t3)["rounds"]
    assert [r["reason"][:15] for r in rounds] == ["too little data"]
    assert loop_status(t)["rounds"][-1]["reason"] == "the training data is all one answer"


def test_the_builtin_trainer_fine_tunes_the_recipes_base_and_continues_the_parent(
    tmp_path: Path,
) -> None:
    from gateway.loop.trainers import BuiltinTrainer, TrainJob, trainer_for
    from gateway.tasks import BuildRecipe, JudgeConfig, PromptFormat

    job = TrainJob(
        train=tmp_path / "t.jsonl",
        held_out=tmp_path / "h.jsonl",
        out=tmp_path / "out",
        parent=tmp_path / "v0001" / "student",
        answers=tmp_path / "answers.json",
        log=tmp_path / "log",
    )
    scratch = trainer_for(task(tmp_path))
    assert isinstance(scratch, BuiltinTrainer) and "--base" not in scratch.argv(job)
    assert "--word-dropout" not in scratch.argv(job)
    # A judged free-text task's student is trained as `student build` trains it.
    judged = task(tmp_path).model_copy(
        update={"judge": JudgeConfig(rubric="r", function="gateway.judges.e2e:judge")}
    )
    argv = trainer_for(judged).argv(job)  # type: ignore[attr-defined]
    assert argv[argv.index("--word-dropout") + 1] == "0"
    assert argv[argv.index("--select-by") + 1] == "token_accuracy"
    recipe = BuildRecipe(train=tmp_path / "t.jsonl", base=tmp_path / "smollm2", lora_rank=8)
    prompt = PromptFormat(system="Reply with a label.", placeholders={"X-N": r"n\[(\w+)\]"})
    with_base = task(tmp_path).model_copy(update={"build": recipe, "prompt": prompt})
    argv = trainer_for(with_base).argv(job)  # type: ignore[attr-defined]
    assert argv[argv.index("--base") + 1] == str(tmp_path / "smollm2")
    assert argv[argv.index("--method") + 1] == "lora"
    assert argv[argv.index("--lora-rank") + 1] == "8"
    assert argv[argv.index("--init-from") + 1] == str(job.parent)
    assert argv[argv.index("--system") + 1] == "Reply with a label."
    assert argv[argv.index("--placeholder") + 1] == r"X-N=n\[(\w+)\]"  # read as trained


def test_a_round_that_waits_its_turn_is_logged_once_however_often_it_is_polled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = task(tmp_path, min_pairs=10, min_new_pairs=1)
    records = [captured(f"where is card {i}", "card_arrival") for i in range(40)]
    other = Lease(None, Registry(tmp_path / "registry", "snips"), "snips", turns=True)

    async def polls() -> list[object]:
        worker = LoopWorker(t, History(records))  # type: ignore[arg-type]
        out = []
        async with other.take() as running:  # another task's round runs meanwhile
            assert running
            for n in (40, 41, 42):  # the trigger's count grows every poll
                worker.history = History(records[:n] + records[: n - 40])  # type: ignore[assignment]
                out.append(await worker.step())
        return out

    with caplog.at_level(logging.INFO, logger="gateway.loop.worker"):
        assert asyncio.run(polls()) == [None, None, None]
    waits = [r.getMessage() for r in caplog.records if "waits" in r.getMessage()]
    assert len(waits) == 1 and waits[0].startswith("task banking77: a round waits: task snips")
