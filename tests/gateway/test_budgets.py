"""Teacher budgets and the cost report in a real gateway on a real Redis, driven by the
official openai SDK: a key's spent budget serves the student's answer and says why; a task
with ``on_budget = "error"`` answers OpenAI's quota 429, which the SDK does not retry;
``/admin/status`` and ``distillgate keys usage`` show the spend; ``distillgate report cost``
agrees with the metrics to the cent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway.keys import key_digest
from gateway.settings import Settings
from gateway.simulator import SimulatedAnswers, create_sim_app
from tests.conftest import (
    IN_DOMAIN,
    LABELS,
    cli,
    serve_in_thread,
    write_calibrator,
    write_task,
)
from tests.redis_server import RedisServer

ADMIN = "admin-budget-test"
KEY_ENV = "DISTILLGATE_BUDGET_TEACHER_KEY"
# Output at $100 per million simulator tokens (4 characters): a label costs ~$0.0003.
PRICES = "[prices]\nteacher_input = 0.0\nteacher_output = 100.0\n"


def test_budgets_in_a_real_gateway_and_the_cost_report_matches_the_metrics(
    tiny_student,
    run_gateway,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    sim = serve_in_thread(create_sim_app(SimulatedAnswers({IN_DOMAIN: "card_arrival"}, LABELS)))
    monkeypatch.setenv(KEY_ENV, "k")
    calibrator = write_calibrator(tmp_path / "c.json", tiny_student.path)
    teacher = f'[teacher]\nbase_url = "{sim.url}"\napi_key_env = "{KEY_ENV}"\n'
    tasks = tmp_path / "tasks"
    write_task(tasks, tiny_student.path, extra=f'calibrator = "{calibrator}"\n{teacher}{PRICES}')
    strict = f'{teacher}on_budget = "error"\nusd_per_day = 0.0005\n{PRICES}'
    write_task(tasks, tiny_student.path, "strict", extra=f'calibrator = "{calibrator}"\n{strict}')
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "acme"\nsha256 = "{key_digest("k-acme").hex()}"\n'
        "teacher_usd_per_day = 0.001\nteacher_usd_per_month = 1.0\n"
        f'[[keys]]\nname = "globex"\nsha256 = "{key_digest("k-glx").hex()}"\n'
    )
    settings = Settings(
        tasks_dir=tasks,
        redis_url=redis_server.url,
        api_keys_file=keys,
        admin_key=ADMIN,  # type: ignore[arg-type]
        allow_force_route=True,
        spool_dir=tmp_path / "spool",
    )
    gw = run_gateway(settings)
    teacher_route = {"x-distillgate-force-route": "teacher"}

    def ask(key: str, model: str = "banking77", text: str = IN_DOMAIN) -> httpx.Headers:
        raw = gw.client(api_key=key).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], extra_headers=teacher_route
        )
        return raw.headers

    # 1. acme's $0.001 a day buys a few calls; then the student answers, saying why.
    routes = [ask("k-acme", text=f"{IN_DOMAIN} {i}")["x-distillgate-route"] for i in range(8)]
    paid = routes.count("teacher")
    assert 2 <= paid <= 5 and routes == ["teacher"] * paid + ["student-fallback"] * (8 - paid)
    spent = ask("k-acme", text="one more")
    assert spent["x-distillgate-budget-spent"] == "key:acme:day"
    assert spent["x-distillgate-reason"] == "teacher_budget_spent"
    assert ask("k-glx")["x-distillgate-route"] == "teacher"  # another key: no budget
    for i in range(4):  # student answers too: the report's shares
        gw.client(api_key="k-glx").chat.completions.create(
            model="banking77", messages=[{"role": "user", "content": f"{IN_DOMAIN} {i}"}]
        )

    # 2. The strict task's own $0.0005: OpenAI's quota 429 once spent, not retried.
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="k-glx", max_retries=2)
    for i in range(10):
        try:
            client.chat.completions.create(
                model="strict",
                messages=[{"role": "user", "content": f"strict {i}"}],
                extra_headers=teacher_route,
            )
        except openai.RateLimitError as exc:
            error = exc
            break
    else:
        raise AssertionError("the strict task's budget never ran out")
    assert error.code == "insufficient_quota" and "task 'strict'" in error.message
    assert error.response.headers["x-distillgate-budget-spent"] == "task:strict:day"
    refused = 'distillgate_requests_total{route="none",status="429",task="strict"}'
    assert f"{refused} 1.0" in httpx.get(f"{gw.url}/metrics").text  # one try, no retries

    # 3. The figures: /admin/status and `keys usage`, spend as the budgets counted it.
    status = httpx.get(f"{gw.url}/admin/status", headers={"authorization": f"Bearer {ADMIN}"})
    budgets = {b["budget"]: b for b in status.json()["budgets"]}
    assert set(budgets) == {"key:acme:day", "key:acme:month", "task:strict:day"}
    day = budgets["key:acme:day"]
    assert day["limit_usd"] == 0.001 and day["spent_usd"] >= 0.001 - 0.0004
    assert day["left_usd"] == round(max(0.0, 0.001 - day["spent_usd"]), 6)
    assert day["resets_at"].endswith("T00:00:00Z") and day["shared"] is True
    time.sleep(1.5)  # the usage ledger's flush
    monkeypatch.setenv("DISTILLGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("DISTILLGATE_API_KEYS_FILE", str(keys))
    usage = cli("keys", "usage", "--json", cwd=tmp_path)
    assert usage.returncode == 0, usage.stderr
    acme = next(r for r in json.loads(usage.stdout) if r["key"] == "acme")
    assert acme["teacher_usd_today"] == pytest.approx(day["spent_usd"], abs=1e-6)
    assert acme["budgets"][0]["spent_usd"] == pytest.approx(day["spent_usd"], abs=1e-6)

    # 4. The cost report agrees with the metrics to the cent (here: to a millionth).
    chart = tmp_path / "cost.png"
    report = cli("report", "cost", "--since", "1d", "--json", "--chart", str(chart), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["rows"]
    total = rows[-1]
    assert (total["task"], total["key"]) == ("*", "*")
    metrics = gw.metric
    assert total["teacher_usd"] == pytest.approx(
        metrics("distillgate_teacher_cost_usd_total"), abs=1e-6
    )
    saved = metrics("distillgate_estimated_savings_usd_total")
    assert saved > 0 and total["saved_usd"] == pytest.approx(saved, abs=1e-6)
    served = total["requests"]
    text = httpx.get(f"{gw.url}/metrics").text
    for route in ("student", "student-fallback", "teacher", "cache"):
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("distillgate_requests_total{")
            and f'route="{route}"' in line
            and 'status="200"' in line
        )
        assert served[route] == counted, (route, served, counted)
    acme_row = next(r for r in rows if (r["task"], r["key"]) == ("banking77", "acme"))
    assert acme_row["requests"]["student-fallback"] == 9 - paid
    assert acme_row["teacher_usd"] == pytest.approx(day["spent_usd"], abs=1e-6)
    assert chart.stat().st_size > 1000
    table = cli("report", "cost", "--since", "7d", cwd=tmp_path)
    assert table.returncode == 0 and "acme" in table.stdout and "strict" in table.stdout
    sim.stop()
