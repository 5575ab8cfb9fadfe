"""``distillgate calibrate``: fit a task's temperature and threshold on labelled data.

The labelled set is split in two disjoint parts: T is fitted on a third (NLL of whether
the student's own greedy answers were right, under their sequence probability at T; see
``calibration/temperature.py`` for why not the reference tokens' NLL), the threshold
chosen on the rest (the same confidences at T against correctness), and that part's
metrics are reported before and after scaling, with the reference answers' token NLL.

A free-text task's answers are right when its judge accepts them (``verdicts``). There a
logistic calibrator on the answer's token features competes with the temperature: both
are fitted on half of the first third and compared by NLL on its other half (the threshold's
part stays untouched), and the winner is refitted on the whole third.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibration import (
    AnswerTemperatureScaler,
    Calibration,
    LogisticCalibrator,
    RoutingGoal,
    ThresholdSelector,
    aurc_loss,
    brier_score_loss,
    confidence,
    expected_calibration_error,
    log_loss,
    maximum_calibration_error,
    student_fingerprint,
    text_features,
)
from calibration.temperature import log_softmax
from gateway.answers import AnswerCheck
from gateway.engines.base import SamplingParams, TopKScorer
from gateway.engines.factory import ReplayEngine, replay_engine
from gateway.engines.placeholders import PlaceholderEngine
from gateway.engines.transformers import TransformersEngine
from gateway.examples import Example
from gateway.jobs.replay import StudentAnswer, replay
from gateway.pipeline.prompt import example_request
from gateway.tasks import PromptFormat
from gateway.training.scoring import ScoredAnswer, score_answers, top_k_scored

__all__ = [
    "MIN_EXAMPLES",
    "ScoredSet",
    "calibration_metrics",
    "fit_calibration",
    "reference_token_nll",
    "score_set",
    "sequence_confidence",
    "teacher_forced",
]


MIN_EXAMPLES = 20  # fewer cannot fit T on a third and a threshold on the rest


@dataclass(frozen=True)
class ScoredSet:
    """A labelled set replayed through the student and scored, ready for calibration."""

    examples: list[Example]
    answers: list[StudentAnswer]
    references: list[ScoredAnswer]  # the reference answers, teacher-forced
    greedy: list[ScoredAnswer]  # the student's own answers, teacher-forced
    prompt_ids: list[list[int]]  # what the student read, exactly as serving encodes it
    check: AnswerCheck = field(default_factory=AnswerCheck)  # when an answer is right
    verdicts: NDArray[np.float64] | None = None  # a free-text task: the judge accepted (1)

    @property
    def correct(self) -> NDArray[np.float64]:
        if self.verdicts is not None:
            return self.verdicts
        return np.array(
            [
                self.check.same(a.text, e.answer)
                for a, e in zip(self.answers, self.examples, strict=True)
            ],
            dtype=np.float64,
        )

    def subset(self, idx: Sequence[int]) -> ScoredSet:
        return ScoredSet(
            [self.examples[i] for i in idx],
            [self.answers[i] for i in idx],
            [self.references[i] for i in idx],
            [self.greedy[i] for i in idx],
            [self.prompt_ids[i] for i in idx],
            self.check,
            None if self.verdicts is None else self.verdicts[list(idx)],
        )


def reference_token_nll(scored: Sequence[ScoredAnswer], temperature: float) -> float:
    """Mean NLL per token of the reference answers at T: how well the student predicts them."""
    lp = np.concatenate(
        [log_softmax(s.logits, temperature)[np.arange(s.targets.size), s.targets] for s in scored]
    )
    return float(-lp.mean())


def sequence_confidence(scored: Sequence[ScoredAnswer], temperature: float) -> NDArray[np.float64]:
    """Each answer's confidence at T, as serving computes it (``calibration.confidence`` of
    its tokens' log softmax(z / T), the end token included)."""
    token_logprobs = (
        log_softmax(s.logits, temperature)[np.arange(s.targets.size), s.targets] for s in scored
    )
    return np.array([confidence(lp.tolist()) for lp in token_logprobs])


async def score_set(
    student_dir: Path,
    examples: Sequence[Example],
    *,
    max_tokens: int,
    prompt: PromptFormat,
    check: AnswerCheck | None = None,
    engine: ReplayEngine | None = None,
) -> ScoredSet:
    """Replay and score ``examples`` with the prompts serving builds (``prompt``: the task's
    policy), so the calibrator is fitted on the token ids it will judge; ``engine``: how
    the student is opened (``replay_engine(task)``, the task's engine kind; default the
    embedded one), so it is fitted on the log-probabilities it will be served with."""
    student = (engine or replay_engine(None))(student_dir, len(examples))
    await student.start()
    try:
        answers = await replay(
            student,
            examples,
            max_tokens=max_tokens,
            prompt=prompt,
            prefix="calibrate",
            json_schema=check.schema_json if check else None,
        )
        # A student that reads placeholders is scored on the ids it reads and writes.
        scorer = student.engine if isinstance(student, PlaceholderEngine) else student
        if not isinstance(scorer, TransformersEngine | TopKScorer):
            raise TypeError(f"{type(scorer).__name__} cannot score answers for calibration")
        encoder = student if isinstance(student, PlaceholderEngine) else scorer
        sampling = SamplingParams(max_tokens=1)
        requests = [example_request(prompt, e, "encode", sampling) for e in examples]
        prompts = [encoder.encode(r) for r in requests]
        refs = [encoder.encode_answer(r, e.answer) for r, e in zip(requests, examples, strict=True)]
        own = [list(a.token_ids) for a in answers]
        references = await teacher_forced(scorer, prompts, refs)
        greedy = await teacher_forced(scorer, prompts, own)
    finally:
        await student.aclose()
    return ScoredSet(list(examples), answers, references, greedy, prompts, check or AnswerCheck())


async def teacher_forced(
    engine: TransformersEngine | TopKScorer,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
) -> list[ScoredAnswer]:
    """Each answer's tokens scored as the engine's served confidence sees them: over the
    whole vocabulary on the embedded engine, over the top k on vLLM."""
    if isinstance(engine, TransformersEngine):
        pad = engine.tokenizer.pad_token_id or 0
        return score_answers(engine.model, prompts, answers, pad_id=pad)
    return [top_k_scored(rows) for rows in await engine.score_ids(prompts, answers)]


def own_token_logprobs(scored: Sequence[ScoredAnswer]) -> list[list[float]]:
    """Each answer's own tokens' log-probabilities at T = 1 (what serving reads)."""
    return [
        log_softmax(s.logits, 1.0)[np.arange(s.targets.size), s.targets].tolist() for s in scored
    ]


def text_confidence(
    model: LogisticCalibrator, scored: Sequence[ScoredAnswer]
) -> NDArray[np.float64]:
    return np.array([model.predict_one(text_features(lp)) for lp in own_token_logprobs(scored)])


def _text_model(part: ScoredSet) -> LogisticCalibrator:
    features = [text_features(lp) for lp in own_token_logprobs(part.greedy)]
    return LogisticCalibrator().fit(features, part.correct)


def _temperature(part: ScoredSet) -> float:
    scaler = AnswerTemperatureScaler().fit(
        [g.logits for g in part.greedy], [g.targets for g in part.greedy], part.correct
    )
    return float(scaler.temperature_)


def choose_text_calibrator(fit_part: ScoredSet, seed: int) -> tuple[str, dict[str, float]]:
    """``"text"`` or ``"sequence"``: which has the lower NLL on half of ``fit_part`` when
    fitted on the other half; and both NLLs."""
    n = len(fit_part.examples)
    order = list(range(n))
    random.Random(seed + 1).shuffle(order)
    train, test = fit_part.subset(sorted(order[: n // 2])), fit_part.subset(sorted(order[n // 2 :]))
    y = test.correct
    nll = {
        "nll_text": log_loss(
            y, np.clip(text_confidence(_text_model(train), test.greedy), 1e-6, 1 - 1e-6)
        ),
        "nll_sequence": log_loss(
            y, np.clip(sequence_confidence(test.greedy, _temperature(train)), 1e-6, 1 - 1e-6)
        ),
    }
    return ("text" if nll["nll_text"] <= nll["nll_sequence"] else "sequence"), nll


def calibration_metrics(
    correct: NDArray[np.float64], confidence: NDArray[np.float64]
) -> dict[str, float]:
    return {
        "accuracy": float(correct.mean()),
        "ece": expected_calibration_error(correct, confidence),
        "mce": maximum_calibration_error(correct, confidence),
        "brier": brier_score_loss(correct, confidence),
        "nll": log_loss(correct, confidence),
        "aurc": aurc_loss(correct, confidence),
    }


def split_for_calibration(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A third to fit T (one scalar needs little data), two thirds for the threshold's test."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[: n // 3]), sorted(idx[n // 3 :])


def fit_calibration(
    scored: ScoredSet,
    student_dir: Path,
    *,
    goal: RoutingGoal,
    seed: int = 0,
) -> tuple[Calibration, ScoredSet]:
    """Fit T on a third and the threshold on the other two thirds (``split_for_calibration``);
    return the calibration and the set the threshold was chosen on."""
    if len(scored.examples) < MIN_EXAMPLES:
        raise ValueError(f"calibration needs at least {MIN_EXAMPLES} labelled examples")
    fit_idx, select_idx = split_for_calibration(len(scored.examples), seed)
    fit_part, select_part = scored.subset(fit_idx), scored.subset(select_idx)
    feature, choice = "sequence", dict[str, float]()
    if scored.verdicts is not None:  # free text: the logistic calibrator may do better
        feature, choice = choose_text_calibrator(fit_part, seed)
    text_model = _text_model(fit_part) if feature == "text" else None
    temperature = 1.0 if text_model is not None else _temperature(fit_part)
    correct = select_part.correct
    before = sequence_confidence(select_part.greedy, 1.0)
    after = (
        text_confidence(text_model, select_part.greedy)
        if text_model is not None
        else sequence_confidence(select_part.greedy, temperature)
    )
    selector = ThresholdSelector(
        target_accuracy=goal.target_accuracy, max_escalation=goal.max_escalation, delta=goal.delta
    )
    selector.fit(after, correct)
    metrics_after = calibration_metrics(correct, after) | choice
    metrics_after.update(
        coverage=float(selector.coverage_),
        accepted_accuracy=float(selector.accepted_accuracy_),
        token_nll=reference_token_nll(select_part.references, temperature),
    )
    metrics_before = calibration_metrics(correct, before) | {
        "token_nll": reference_token_nll(select_part.references, 1.0)
    }
    calibration = Calibration(
        temperature=temperature,
        threshold=float(selector.threshold_),
        student_fingerprint=student_fingerprint(student_dir),
        feature="text" if text_model is not None else "sequence",
        logistic=text_model.to_json() if text_model is not None else None,
        method="logistic" if text_model is not None else "temperature_scaling",
        target_accuracy=goal.target_accuracy,
        max_escalation=goal.max_escalation,
        delta=goal.delta,
        certified=bool(selector.certified_),
        error_bound=float(selector.error_bound_),
        n_temperature=len(fit_idx),
        n_threshold=len(select_idx),
        fitted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        metrics_before=metrics_before,
        metrics_after=metrics_after,
    )
    return calibration, select_part
