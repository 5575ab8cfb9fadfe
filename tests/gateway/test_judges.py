"""Judges: the E2E rubric as a program (what it accepts and rejects, and why), judges named
by import path, and the judge checked against the human references of the E2E test part
before it is trusted with a student (docs/benchmarks.md has the figures and a hand check)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.errors import TeacherTimeout
from gateway.examples import Example, read_examples, write_examples
from gateway.judges import JudgeRequest, ProgramJudge, Verdict, load_function
from gateway.judges.e2e import VENUES, judge, parse_mr
from gateway.judges.factory import open_judge
from gateway.judges.model import VERDICT_SCHEMA, JudgeFailed, ModelJudge, read_question
from gateway.judges.verdicts import JudgeBudgetSpent, VerdictFile, Verdicts
from gateway.simulator import start_simulator
from gateway.tasks import JudgeConfig, Task, TeacherConfig
from gateway.teachers.base import TeacherAnswer, TeacherRequest

ROOT = Path(__file__).resolve().parents[2]
MR = (
    "name[The Eagle], eatType[coffee shop], food[Chinese], priceRange[cheap], "
    "near[Raja Indian Cuisine]"
)


@pytest.mark.parametrize(
    "text",
    [
        "The Eagle is a cheap Chinese coffee shop near Raja Indian Cuisine.",
        "Near Raja Indian Cuisine, the Eagle coffee house serves Chinese food at low prices.",
        "Close to Raja Indian Cuisine you will find The  Eagle, an inexpensive Chinese café.",
    ],
)
def test_every_attribute_realised_and_nothing_added_is_acceptable(text: str) -> None:
    verdict = judge(MR, text)
    assert verdict == Verdict(True, "every attribute realised, nothing added")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The Eagle is a cheap coffee shop near Raja Indian Cuisine.", "missing food[Chinese]"),
        ("The Eagle is a cheap Chinese coffee shop.", "missing near[Raja Indian Cuisine]"),
        (
            "The Eagle is a cheap Chinese coffee shop near Raja Indian Cuisine in the city centre.",
            "added area[city centre]",
        ),
        (
            "The Eagle is a cheap, family-friendly Chinese coffee shop near Raja Indian Cuisine.",
            "added familyFriendly[yes]",
        ),
        (
            "The Mill is a cheap Chinese coffee shop near Raja Indian Cuisine.",
            "missing name[The Eagle]; added venue[The Mill]",
        ),
        (
            "The Eagle is an expensive Chinese coffee shop near Raja Indian Cuisine.",
            "missing priceRange[cheap]",
        ),
    ],
)
def test_a_missing_or_added_attribute_is_rejected_and_named(text: str, reason: str) -> None:
    verdict = judge(MR, text)
    assert not verdict.acceptable and verdict.reason.startswith(reason), verdict.reason


def test_venue_names_never_count_as_food_or_type_and_negation_is_its_own_value() -> None:
    # "Raja Indian Cuisine" is a venue: no Indian food added; "Café Brazil" is no café.
    mr = "name[Aromi], eatType[pub], familyFriendly[no], near[Café Brazil]"
    assert judge(mr, "Aromi is a pub near Café Brazil. It is not family-friendly.").acceptable
    said_yes = judge(mr, "Aromi is a family-friendly pub near Café Brazil.")
    assert not said_yes.acceptable and "missing familyFriendly[no]" in said_yes.reason
    adults = judge(mr, "Aromi, a pub for adults only, is near Café Brazil.")
    assert adults.acceptable


def test_ratings_and_prices_are_read_in_words_or_numbers_and_kept_apart() -> None:
    mr = "name[Cotto], priceRange[high], customer rating[1 out of 5]"
    assert judge(mr, "Cotto has a low customer rating and high prices.").acceptable
    assert judge(mr, "Cotto is expensive and rated 1 out of 5.").acceptable
    # "a high price and an average rating": the rating is not high, and it is not 1 of 5.
    mixed = judge(mr, "Cotto has a high price range and an average customer rating.")
    assert not mixed.acceptable and "missing customer rating" in mixed.reason


def test_a_cleaned_mr_with_two_values_is_realised_by_either() -> None:
    mr = "name[Cocum], priceRange[cheap], priceRange[moderate]"
    assert parse_mr(mr)["priceRange"] == ("cheap", "moderate")
    assert judge(mr, "Cocum is a cheap place.").acceptable
    assert not judge("no attributes here", "Cocum is cheap.").acceptable


def test_a_judge_function_is_named_by_import_path_and_its_answers_take_one_shape() -> None:
    named = ProgramJudge.from_path("gateway.judges.e2e:judge")
    request = JudgeRequest("rubric", MR, "The Eagle is a cheap Chinese coffee shop.")
    verdict = asyncio.run(named.judge(request))
    assert not verdict.acceptable and "near" in verdict.reason and named.name.endswith(":judge")
    assert ProgramJudge(lambda p, a: True).verdict("p", "a") == Verdict(True, "")
    assert ProgramJudge(lambda p, a: (False, "why")).verdict("p", "a") == Verdict(False, "why")
    with pytest.raises(TypeError):
        ProgramJudge(lambda p, a: "yes").verdict("p", "a")
    for bad in ("gateway.judges.e2e", "no_such_module:f", "gateway.judges.e2e:nothing"):
        with pytest.raises(ValueError, match="judge function"):
            load_function(bad)


def test_the_judge_accepts_the_human_texts_and_rejects_them_for_another_input() -> None:
    """The E2E test part (the texts whose input the cleaning confirmed: ``import-e2e``):
    each human text for its own input, and for another's (docs/benchmarks.md has the hand
    check of what it rejects, and the figures on the texts the cleaning changed)."""
    examples = read_examples(ROOT / "data" / "e2e" / "test.jsonl")
    pairs = [(e.prompt or "", t) for e in examples for t in e.references]
    rng = random.Random(0)
    inputs = [e.prompt or "" for e in examples]
    own = sum(judge(mr, text).acceptable for mr, text in pairs) / len(pairs)
    rejected = 0
    for mr, text in pairs:
        other = mr
        while other == mr:
            other = rng.choice(inputs)
        rejected += not judge(other, text).acceptable
    other_rejected = rejected / len(pairs)
    assert len(pairs) > 400 and own >= 0.97 and other_rejected >= 0.97, (own, other_rejected)


def test_import_e2e_splits_inputs_by_a_hash_and_trains_on_texts_the_judge_accepts(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "e2e"
    folder.mkdir()

    def write(name: str, rows: list[tuple[str, str, int]]) -> None:
        lines = "".join(f'"{m}","{r}",{f},"{m}"\n' for m, r, f in rows)
        (folder / name).write_text("mr,ref,fixed,orig_mr\n" + lines, encoding="utf-8")

    venues = VENUES[:30]
    dev = [(f"name[{v}], area[riverside]", f"{v} is by the riverside.", 0) for v in venues[:10]]
    dev += [(f"name[{v}], area[riverside]", f"{v} is cheap, by the river.", 0) for v in venues[10:]]
    write("train.csv", dev)
    # The cleaning kept the pubs' MRs and changed the restaurants'.
    rows = [
        (f"name[{v}], eatType[{t}]", f"{v} is a {t}.", int(t == "restaurant"))
        for v in venues
        for t in ("pub", "restaurant")
    ]
    write("test.csv", rows)
    out = {k: tmp_path / f"{k}.jsonl" for k in ("train", "calibration", "test")}
    argv = ["data", "import-e2e", str(folder), "--out", str(out["train"])]
    argv += ["--calibration-out", str(out["calibration"]), "--test-out", str(out["test"])]
    cli_main(argv)
    train, test, calibration = (read_examples(out[k]) for k in ("train", "test", "calibration"))
    # Training: the texts the program judge accepts (no "cheap" the input lacks), from
    # train.csv and a share of test.csv's inputs (train.csv may lack kinds of input).
    assert sum("riverside" in (e.prompt or "") for e in train) == 10
    moved = {e.prompt for e in train} - {m for m, _, _ in dev}
    assert 5 < len(moved) < 40
    # Calibration and test: every other input, drawn alike; references only the texts
    # whose MR the cleaning confirmed, the answer the first text where none is.
    parts = [moved, {e.prompt for e in test}, {e.prompt for e in calibration}]
    assert all(not a & b for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert sum(map(len, parts)) == 60 and 5 < len(test) < 40
    for e in test + calibration:
        confirmed = "pub" in (e.prompt or "")
        assert e.references == ((e.answer,) if confirmed else ()) and e.answer.endswith(".")
    cli_main([*argv, "--train-texts", "confirmed"])
    assert all("pub" in (e.prompt or "") for e in read_examples(out["train"]) if e.prompt in moved)
    again = tmp_path / "again.jsonl"
    write_examples(again, [Example("a", prompt="p", references=("a", "b"))])
    assert json.loads(again.read_text())["references"] == ["a", "b"]


# -- a judge model through the real SDKs, the simulator behind them ---------------------------
def judged_task(provider: str) -> Task:
    rubric = "Every attribute of the input is realised in the text, and no other is added."
    return Task(
        name="e2e",
        student=Path("s"),
        teacher=TeacherConfig(provider=provider, api_key_env="DISTILLGATE_NO_SUCH_KEY"),  # type: ignore[arg-type]
        judge=JudgeConfig(rubric=rubric, simulator_function="gateway.judges.e2e:judge"),
    )


@pytest.mark.integration  # real HTTP servers, the SDKs
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_judge_model_through_the_sdk_gives_the_program_judges_verdicts(provider: str) -> None:
    examples = read_examples(ROOT / "data" / "e2e" / "test.jsonl")[:40]
    rng = random.Random(1)
    cases = [(e.prompt or "", t) for e in examples for t in e.references[:2]]
    cases += [(rng.choice(examples).prompt or "", e.answer) for e in examples[:20]]  # mismatched
    cases += [(examples[0].prompt or "", ""), (examples[1].prompt or "", "Ünïcødé “quotes”")]

    async def run() -> list[tuple[Verdict, Verdict]]:
        opened = await open_judge(judged_task(provider), simulator=start_simulator)
        try:
            assert opened.label.startswith("model simulator")
            out = []
            for prompt, answer in cases:
                got = await opened.judge.judge(JudgeRequest(opened.rubric, prompt, answer))
                out.append((got, judge(prompt, answer)))
            return out
        finally:
            await opened.aclose()

    pairs = asyncio.run(run())
    assert all((g.acceptable, g.reason) == (e.acceptable, e.reason) for g, e in pairs)
    assert {got.acceptable for got, _ in pairs} == {True, False}  # both kinds were judged
    assert all(got.cost_usd > 0 for got, _ in pairs)  # priced at the task's teacher prices


def test_a_judge_that_fails_or_answers_nonsense_never_accepts() -> None:
    class Broken:
        name = "broken"

        def __init__(self, text: str | None) -> None:
            self.text = text

        async def complete(self, request: TeacherRequest) -> TeacherAnswer:
            assert request.json_schema == VERDICT_SCHEMA and request.system
            assert read_question(request.messages[0].content) == ("in", "out")
            if self.text is None:
                raise TeacherTimeout("judge timed out")
            return TeacherAnswer(self.text, "m", 1, 1, 0.0)

        async def aclose(self) -> None:
            pass

    for text in (None, "not json", '{"acceptable": "yes", "reason": "x"}', "[true]"):
        with pytest.raises(JudgeFailed):
            asyncio.run(ModelJudge(Broken(text)).judge(JudgeRequest("r", "in", "out")))
    ok = asyncio.run(
        ModelJudge(Broken('{"acceptable":true,"reason":"ok"}')).judge(
            JudgeRequest("r", "in", "out")
        )
    )
    assert ok == Verdict(True, "ok")


def test_a_judge_is_for_free_text_tasks_and_is_a_program_or_a_model() -> None:
    with pytest.raises(ValueError, match="free-text"):
        Task(name="t", student=Path("s"), answers=("a",), judge=JudgeConfig(rubric="r"))
    with pytest.raises(ValueError, match="not both"):
        JudgeConfig(rubric="r", function="m:f", provider="openai")
    program = Task(
        name="t",
        student=Path("s"),
        judge=JudgeConfig(rubric="r", function="gateway.judges.e2e:judge"),
    )
    opened = asyncio.run(open_judge(program))
    assert opened.label == "program gateway.judges.e2e:judge" and opened.rubric == "r"


class CountingJudge:
    """Accepts answers that name the venue; counts its calls; fails on "boom"."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def judge(self, request: JudgeRequest) -> Verdict:
        self.calls += 1
        if request.answer == "boom":
            raise TimeoutError("no verdict")
        return Verdict("Aromi" in request.answer, "", cost_usd=0.001)

    async def aclose(self) -> None:
        pass


def test_verdicts_ask_each_pair_once_within_a_budget_and_keep_them_on_disk(
    tmp_path: Path,
) -> None:
    judge = CountingJudge()
    store = VerdictFile(tmp_path / "verdicts.jsonl")
    verdicts = Verdicts(judge, "names the venue", max_calls=3, store=store)
    pairs = [("p", "Aromi is a pub."), ("p", "A pub."), ("p", "Aromi is a pub."), ("p", "boom")]
    assert asyncio.run(verdicts.acceptable(pairs)) == [True, False, True, False]
    assert judge.calls == 3 and verdicts.failures == 1  # "boom": no verdict, not acceptable
    assert verdicts.cost_usd == pytest.approx(0.002)
    with pytest.raises(JudgeBudgetSpent):  # one new pair (and "boom" again) passes 3 calls
        asyncio.run(verdicts.acceptable([("q", "Aromi")]))
    assert judge.calls == 3  # nothing asked past the budget
    # A torn last line (a crash mid-write) is skipped; the next run asks only the failure.
    with (tmp_path / "verdicts.jsonl").open("a") as f:
        f.write('["abc", tr')
    again = Verdicts(judge, "names the venue", store=VerdictFile(tmp_path / "verdicts.jsonl"))
    assert asyncio.run(again.acceptable(pairs)) == [True, False, True, False]
    assert judge.calls == 4 and again.asked == 1  # only "boom" again: failures are not kept
    other = Verdicts(judge, "another rubric", store=VerdictFile(tmp_path / "verdicts.jsonl"))
    asyncio.run(other.acceptable(pairs[:1]))
    assert judge.calls == 5  # a verdict holds for its rubric only
