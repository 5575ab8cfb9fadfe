"""A LoRA adapter as a task's student, through the real gateway and the openai SDK.

The base is the session's tiny trained student; the adapter is a short LoRA run on it
(``distillgate student train --base``). Served as base + adapter it must give the tokens and
confidences its merged weights give; a task with it calibrates, evaluates and serves from
the command line; its fingerprint covers the adapter and the base, and survives a move.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from calibration import load_calibration, student_fingerprint
from gateway.engines.student_folder import open_student
from gateway.examples import Example, read_examples, write_examples
from gateway.settings import Settings
from tests.conftest import (
    DATA,
    Gateway,
    TinyStudent,
    cli,
    subset,
    write_calibrator,
    write_task,
)

NEW = ("top_up_failed", "pin_blocked")  # intents the base never saw


def _new_intents(path: Path, per_label: int) -> list[Example]:
    return [e for e in read_examples(path) if e.answer in NEW][: 2 * per_label]


@pytest.fixture(scope="module")
def adapter(tiny_student: TinyStudent, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LoRA on the tiny student, taught two intents it never saw (so it must move)."""
    root = tmp_path_factory.mktemp("adapter")
    write_examples(
        root / "train.jsonl", tiny_student.train + _new_intents(DATA / "train.jsonl", 60)
    )
    # Held out: the new intents only, which the base cannot answer, so the checkpoint kept
    # is the trained one whenever their loss falls (an old intent's slip cannot veto it).
    write_examples(root / "held.jsonl", _new_intents(DATA / "test.jsonl", 10))
    done = cli(
        "student", "train", "--base", str(tiny_student.path), "--method", "lora",
        "--lora-rank", "8", "--lr", "3e-3", "--max-steps", "40", "--data", "train.jsonl",
        "--held-out", "held.jsonl", "--out", "lora", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, best = map(float, re.search(r"held-out loss (\S+) -> (\S+),", done.stdout).groups())  # type: ignore[union-attr]
    assert best < first
    return root / "lora"


@pytest.fixture(scope="module")
def merged(adapter: Path) -> Path:
    """The same adapter merged into its base and saved as a whole model."""
    out = adapter.with_name("merged")
    open_student(adapter).load_model().save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (adapter / name).is_file():
            shutil.copyfile(adapter / name, out / name)
    for name in ("generation_config.json", "distillgate_student.json"):
        shutil.copyfile(adapter / name, out / name)
    return out


def test_base_plus_adapter_serves_what_the_merged_weights_serve(
    tiny_student: TinyStudent, adapter: Path, merged: Path, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tasks = tmp_path / "tasks"
    for name, folder in (("adapter", adapter), ("merged", merged), ("base", tiny_student.path)):
        calibrator = write_calibrator(tmp_path / f"{name}.json", folder, threshold=0.0)
        tasks.mkdir(exist_ok=True)  # an open answer set: the new intents are answers too
        (tasks / f"{name}.toml").write_text(
            f'student = "{folder}"\ncalibrator = "{calibrator}"\n[generation]\nmax_tokens = 24\n'
        )
    gw: Gateway = run_gateway(Settings(tasks_dir=tasks, redis_url=""))
    assert student_fingerprint(adapter) != student_fingerprint(merged)  # two different folders
    moved = 0  # answers whose logprobs the adapter changed from the base's
    for example in tiny_student.test[:6] + _new_intents(DATA / "test.jsonl", 3):
        replies = []
        for task in ("adapter", "merged", "base"):
            raw = gw.client().chat.completions.with_raw_response.create(
                model=task,
                messages=[{"role": "user", "content": example.prompt}],
                logprobs=True,
                top_logprobs=3,
            )
            reply = raw.parse()
            content = reply.choices[0].logprobs.content
            replies.append(
                (
                    reply.choices[0].message.content,
                    [t.token for t in content],
                    [t.logprob for t in content],
                    float(raw.headers["x-distillgate-confidence"]),
                    raw.headers["x-distillgate-route"],
                )
            )
        (text, tokens, lps, conf, route), (m_text, m_tokens, m_lps, m_conf, m_route) = replies[:2]
        assert (text, tokens, route) == (m_text, m_tokens, m_route) and route == "student"
        assert lps == pytest.approx(m_lps, abs=1e-4)
        assert conf == pytest.approx(m_conf, abs=1e-4)
        moved += replies[2][2] != pytest.approx(lps, abs=1e-3)
    assert moved >= 4  # the adapter is applied, not the base served alone


def test_an_adapter_task_calibrates_evaluates_and_serves(
    tiny_student: TinyStudent, adapter: Path, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    held = [e for e in subset(DATA / "train.jsonl", 90) if e not in tiny_student.train]
    write_examples(tmp_path / "cal.jsonl", held)
    write_examples(tmp_path / "test.jsonl", tiny_student.test)
    tasks = tmp_path / "tasks"
    write_task(tasks, adapter, "intents", extra=f'calibrator = "{tmp_path / "cal.json"}"\n')
    done = cli(
        "calibrate", "--task", "intents", "--data", "cal.jsonl", "--max-escalation", "0.4",
        cwd=tmp_path, tasks=tasks,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calibration = load_calibration(tmp_path / "cal.json", student_dir=adapter)
    assert calibration.n_temperature + calibration.n_threshold == len(held)
    done = cli(
        "evaluate", "--task", "intents", "--data", "test.jsonl", "--out", "report.json",
        cwd=tmp_path, tasks=tasks,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == len(tiny_student.test) and 0 < report["student_accuracy"] <= 1

    gw: Gateway = run_gateway(Settings(tasks_dir=tasks, redis_url=""))
    routes = set()
    for example in tiny_student.test[:12]:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="intents", messages=[{"role": "user", "content": example.prompt}]
        )
        routes.add(raw.headers["x-distillgate-route"])
        reply = raw.parse()
        assert reply.choices[0].message.content  # no teacher here: the student answers
        assert 0.0 <= float(raw.headers["x-distillgate-confidence"]) <= 1.0
    assert "student" in routes


def test_the_fingerprint_covers_the_base_and_survives_a_move(
    tiny_student: TinyStudent, adapter: Path, tmp_path: Path
) -> None:
    base_copy, adapter_copy = tmp_path / "base", tmp_path / "adapter"
    shutil.copytree(tiny_student.path, base_copy)
    shutil.copytree(adapter, adapter_copy)
    config = json.loads((adapter_copy / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../base"
    (adapter_copy / "adapter_config.json").write_text(json.dumps(config))
    assert student_fingerprint(adapter_copy) == student_fingerprint(adapter)  # moved together
    weights = base_copy / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one byte of the base's weights
    weights.write_bytes(bytes(blob))
    assert student_fingerprint(adapter_copy) != student_fingerprint(adapter)


def test_a_remote_fleet_serves_the_adapter_by_its_name(
    tiny_student: TinyStudent, adapter: Path, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The fleet (a second gateway, as `vllm serve --lora-modules` would) serves the adapter
    under a name; the task names it in [engine] model and keeps the adapter folder as its
    student, whose fingerprint (adapter and base) binds the calibrator."""
    fleet_tasks, tasks = tmp_path / "fleet", tmp_path / "tasks"
    fleet_tasks.mkdir()
    (fleet_tasks / "intents-lora.toml").write_text(
        f'student = "{adapter}"\n[prompt]\ninput = "conversation"\n[generation]\nmax_tokens = 24\n'
    )
    fleet: Gateway = run_gateway(Settings(tasks_dir=fleet_tasks, redis_url=""))
    calibrator = write_calibrator(tmp_path / "c.json", adapter, threshold=0.0)
    engine = f'[engine]\nkind = "remote"\nbase_url = "{fleet.url}/v1"\nmodel = "intents-lora"\n'
    write_task(tasks, adapter, "remote", extra=f'calibrator = "{calibrator}"\n{engine}')
    write_task(tasks, adapter, "local", extra=f'calibrator = "{calibrator}"\n')
    gw: Gateway = run_gateway(Settings(tasks_dir=tasks, redis_url=""))
    for example in tiny_student.test[:6]:
        texts = [
            gw.client()
            .chat.completions.create(
                model=task, messages=[{"role": "user", "content": example.prompt}]
            )
            .choices[0]
            .message.content
            for task in ("remote", "local")
        ]
        assert texts[0] == texts[1]
