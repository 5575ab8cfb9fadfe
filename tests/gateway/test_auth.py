"""Client keys (hashed, scoped, rate-limited), the admin key, and keyed probes, over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from gateway.errors import RateLimited
from gateway.keys import ClientKey, KeyRing, KeyRingError, key_digest
from gateway.limits.process import ProcessRateLimiter
from gateway.settings import Settings
from tests.conftest import Gateway, write_task

ADMIN = "admin-secret"
MESSAGES = [{"role": "user", "content": "my card has not arrived"}]


def key_file(path: Path, entries: list[str]) -> Path:
    path.write_text("\n".join(entries))
    return path


def entry(name: str, key: str, extra: str = "") -> str:
    return f'[[keys]]\nname = "{name}"\nsha256 = "{key_digest(key).hex()}"\n{extra}\n'


# -- the key ring and the limiter, alone -----------------------------------------------------
def test_the_key_ring_holds_digests_only_and_identifies_keys(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys.toml", [entry("app", "k-app", 'tasks = ["banking77"]')])
    ring = KeyRing.load(["plain-key", f"sha256:{key_digest('hashed-key').hex()}"], path)
    assert len(ring) == 3
    app = ring.identify(b"k-app")
    assert app is not None and app.name == "app" and app.tasks == frozenset({"banking77"})
    assert ring.identify(b"plain-key") is not None and ring.identify(b"hashed-key") is not None
    assert ring.identify(b"k-ap") is None and ring.identify(b"") is None
    assert "k-app" not in path.read_text()


def test_a_key_may_carry_teacher_budgets(tmp_path: Path) -> None:
    budgets = "teacher_usd_per_day = 5\nteacher_usd_per_month = 99.5"
    path = key_file(tmp_path / "keys.toml", [entry("app", "k-app", budgets)])
    (key,) = KeyRing.load(file=path)
    assert (key.teacher_usd_per_day, key.teacher_usd_per_month) == (5.0, 99.5)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[keys]]\nname = "a"\nkey = "plain"\n', "unknown fields"),
        ('[[keys]]\nname = "a"\n', "sha256 is required"),
        ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "64 hex digits"),
        (entry("a", "k", "requests_per_minute = 0"), "positive integer"),
        (entry("a", "k", "teacher_usd_per_day = -1"), "positive number of US dollars"),
        (entry("a", "k", 'teacher_usd_per_month = "5"'), "positive number of US dollars"),
        (entry("a", "k") + entry("b", "k"), "listed twice"),
        ("[[keys]\n", "cannot read"),
    ],
)
def test_a_bad_key_file_is_refused_with_the_reason(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(KeyRingError, match=problem):
        KeyRing.load(file=key_file(tmp_path / "keys.toml", [text]))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_burst_then_refill() -> None:
    clock = Clock()
    limiter = ProcessRateLimiter(clock)
    key = ClientKey("k", key_digest("k"), requests_per_minute=60)
    for _ in range(60):
        limiter.check(key)
    with pytest.raises(RateLimited) as info:
        limiter.check(key)
    assert info.value.error_type == "requests" and info.value.headers()["Retry-After"] == "1"
    clock.now += 1.0  # one request a second comes back
    limiter.check(key)
    with pytest.raises(RateLimited):
        limiter.check(key)


def test_tokens_per_minute_are_charged_after_the_answer_and_can_go_into_debt() -> None:
    clock = Clock()
    limiter = ProcessRateLimiter(clock)
    key = ClientKey("k", key_digest("k"), tokens_per_minute=600)  # 10 tokens a second
    limiter.check(key)
    limiter.charge(key, 900)  # 300 in debt
    with pytest.raises(RateLimited) as info:
        limiter.check(key)
    assert info.value.error_type == "tokens"
    assert info.value.headers()["Retry-After"] == "31"  # 301 tokens at 10 a second
    clock.now += 31
    limiter.check(key)


# -- the gateway -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tiny_student, run_gateway, tmp_path_factory: pytest.TempPathFactory) -> Gateway:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("auth")
    write_task(tmp / "tasks", tiny_student.path)
    write_task(tmp / "tasks", tiny_student.path, name="other")
    keys = key_file(
        tmp / "keys.toml",
        [
            entry("all", "k-all"),
            entry("scoped", "k-scoped", 'tasks = ["other"]'),
            entry("slow", "k-slow", "requests_per_minute = 3"),
            entry("thrifty", "k-thrifty", "tokens_per_minute = 60"),
        ],
    )
    settings = Settings(
        tasks_dir=tmp / "tasks",
        api_keys_file=keys,
        admin_key=ADMIN,  # type: ignore[arg-type]
        metrics_access="client",
        health_access="open",
    )
    return run_gateway(settings)  # type: ignore[no-any-return]


def chat(gw: Gateway, key: str, model: str = "banking77") -> str:
    reply = gw.client(api_key=key).chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return str(reply.choices[0].message.content)


def test_wrong_or_missing_keys_get_401(keyed: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        chat(keyed, "k-al")
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    for headers in ({}, {"authorization": "Basic k-all"}, {"authorization": "Bearer"}):
        r = httpx.get(f"{keyed.url}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert chat(keyed, "k-all")


def test_the_admin_key_is_not_a_client_key_and_client_keys_are_not_admin(keyed: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(keyed, ADMIN)
    r = httpx.get(f"{keyed.url}/admin/status", headers={"authorization": "Bearer k-all"})
    assert r.status_code == 401
    r = httpx.get(f"{keyed.url}/admin/status", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["draining"] is False


def test_a_scoped_key_sees_and_calls_only_its_tasks(keyed: Gateway) -> None:
    client = keyed.client(api_key="k-scoped")
    assert [m.id for m in client.models.list()] == ["other"]
    assert chat(keyed, "k-scoped", model="other")
    with pytest.raises(openai.NotFoundError) as info:
        chat(keyed, "k-scoped", model="banking77")
    assert "do not have access" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("banking77")
    assert {m.id for m in keyed.client(api_key="k-all").models.list()} == {"banking77", "other"}


def test_requests_per_minute_answer_429_with_retry_after(keyed: Gateway) -> None:
    for _ in range(3):
        chat(keyed, "k-slow")
    with pytest.raises(openai.RateLimitError) as info:
        chat(keyed, "k-slow")
    assert int(info.value.response.headers["retry-after"]) >= 1
    body = info.value.body
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "requests"  # type: ignore[index]
    assert chat(keyed, "k-all")  # other keys are untouched
    metrics = httpx.get(f"{keyed.url}/metrics", headers={"authorization": "Bearer k-all"}).text
    assert 'distillgate_rate_limited_total{key="slow",limit="requests"} 1.0' in metrics


def test_tokens_per_minute_refuse_once_spent(keyed: Gateway) -> None:
    spent = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(60):
            reply = keyed.client(api_key="k-thrifty").chat.completions.create(
                model="banking77",
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            assert reply.usage is not None
            spent += reply.usage.total_tokens
    assert spent >= 60 and info.value.body["type"] == "tokens"  # type: ignore[index]


def test_metrics_need_a_key_when_configured_and_probes_stay_open(keyed: Gateway) -> None:
    assert httpx.get(f"{keyed.url}/metrics").status_code == 401
    ok = httpx.get(f"{keyed.url}/metrics", headers={"authorization": "Bearer k-all"})
    assert ok.status_code == 200 and "distillgate_requests_total" in ok.text
    by_admin = httpx.get(f"{keyed.url}/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert by_admin.status_code == 200
    assert httpx.get(f"{keyed.url}/readyz").status_code == 200


def test_drain_takes_the_gateway_out_of_rotation_and_still_answers(keyed: Gateway) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.post(f"{keyed.url}/admin/drain", headers=admin).status_code == 200
    try:
        r = httpx.get(f"{keyed.url}/readyz")
        assert r.status_code == 503 and "draining" in r.json()["error"]["message"]
        assert chat(keyed, "k-all")  # a request the load balancer still sent is answered
    finally:
        assert httpx.delete(f"{keyed.url}/admin/drain", headers=admin).status_code == 200
    assert httpx.get(f"{keyed.url}/readyz").status_code == 200


def test_keyed_probes_and_an_admin_only_setting_without_admin_key(
    tiny_student, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, tiny_student.path)
    gw = run_gateway(
        Settings(tasks_dir=tmp_path, api_keys=["c"], admin_key=ADMIN, health_access="admin")  # type: ignore[arg-type]
    )
    assert httpx.get(f"{gw.url}/readyz").status_code == 401
    assert httpx.get(f"{gw.url}/healthz", headers={"authorization": "Bearer c"}).status_code == 401
    r = httpx.get(f"{gw.url}/healthz", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    assert httpx.get(f"{gw.url}/metrics").status_code == 200  # open by default
    with pytest.raises(ValueError, match="needs DISTILLGATE_ADMIN_KEY"):
        run_gateway(Settings(tasks_dir=tmp_path, metrics_access="admin"))


def test_reload_picks_up_a_changed_key_file(tiny_student, run_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path / "tasks", tiny_student.path)
    keys = key_file(tmp_path / "keys.toml", [entry("old", "k-old")])
    gw = run_gateway(
        Settings(tasks_dir=tmp_path / "tasks", api_keys_file=keys, admin_key=ADMIN)  # type: ignore[arg-type]
    )
    assert chat(gw, "k-old")
    key_file(keys, [entry("new", "k-new")])
    admin = {"authorization": f"Bearer {ADMIN}"}
    r = httpx.post(f"{gw.url}/admin/reload", headers=admin, timeout=60)
    assert r.status_code == 200 and r.json()["client_keys"] == 1
    assert chat(gw, "k-new")
    with pytest.raises(openai.AuthenticationError):
        chat(gw, "k-old")
    key_file(keys, ["[[keys]]\nname = 'broken'\n"])
    assert httpx.post(f"{gw.url}/admin/reload", headers=admin, timeout=60).status_code == 409
    assert chat(gw, "k-new")  # the refused file changed nothing


def test_keys_new_prints_the_key_once_and_an_entry_that_accepts_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "keys",
            "new",
            "--name",
            "app",
            "--task",
            "banking77",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = next(line for line in out.splitlines() if line.startswith("dg-"))
    entry_text = out[out.index("[[keys]]") :]
    assert key not in entry_text
    ring = KeyRing.load(file=key_file(tmp_path / "keys.toml", [entry_text]))
    found = ring.identify(key.encode())
    assert found is not None and found.name == "app" and found.tasks == frozenset({"banking77"})
    hashed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "hash"],
        input=key + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hashed == key_digest(key).hex()
