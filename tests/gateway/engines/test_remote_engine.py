"""The remote engine inside a gateway, and its failures, against real servers.

The fleet is the project's own gateway serving the tiny student (as in the conformance
suite); the gateway under test has a task whose student is that fleet.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import openai
import pytest

from gateway.engines.base import GenerationRequest, Message, SamplingParams
from gateway.engines.remote import RemoteEngine
from gateway.errors import EngineError, EngineUnavailable, InvalidRequest
from gateway.settings import Settings
from tests.conftest import Gateway, free_port, write_calibrator, write_task


def remote_section(url: str, **extra: str) -> str:
    lines = ['kind = "remote"', f'base_url = "{url}/v1"', 'model = "student"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "[engine]\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fronted(tiny_student, fleet, run_gateway, tmp_path_factory) -> Gateway:  # type: ignore[no-untyped-def]
    """A calibrated task whose student is the fleet."""
    tasks = tmp_path_factory.mktemp("remote-tasks")
    calibrator = write_calibrator(tasks / "cal.json", tiny_student.path, threshold=0.0)
    write_task(
        tasks,
        tiny_student.path,
        extra=f'calibrator = "{calibrator}"\n' + remote_section(fleet.url, health_path='"/readyz"'),
    )
    return run_gateway(Settings(tasks_dir=tasks, redis_url=""))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def local(tiny_student, run_gateway, tmp_path_factory) -> Gateway:  # type: ignore[no-untyped-def]
    """The same calibrated task on the embedded engine, for comparison."""
    tasks = tmp_path_factory.mktemp("local-tasks")
    calibrator = write_calibrator(tasks / "cal.json", tiny_student.path, threshold=0.0)
    write_task(tasks, tiny_student.path, extra=f'calibrator = "{calibrator}"\n')
    return run_gateway(Settings(tasks_dir=tasks, redis_url=""))  # type: ignore[no-any-return]


def test_a_gateway_serves_a_remote_student_with_its_confidence(
    fronted, local, tiny_student
) -> None:  # type: ignore[no-untyped-def]
    for example in tiny_student.test[:8]:
        answers = []
        for gw in (fronted, local):
            raw = gw.client().chat.completions.with_raw_response.create(
                model="banking77",
                messages=[{"role": "user", "content": example.prompt}],
                logprobs=True,
                top_logprobs=2,
            )
            answers.append((raw.parse(), float(raw.headers["x-distillgate-confidence"])))
        (remote, remote_conf), (embedded, embedded_conf) = answers
        assert remote.choices[0].message.content == embedded.choices[0].message.content
        assert len(remote.choices[0].logprobs.content[0].top_logprobs) == 2
        # top-20 renormalisation can only overstate the full-softmax confidence, a little
        assert embedded_conf - 1e-3 <= remote_conf <= embedded_conf + 0.05


def test_a_remote_student_streams_through_the_gateway(fronted) -> None:  # type: ignore[no-untyped-def]
    stream = fronted.client().chat.completions.create(
        model="banking77", messages=[{"role": "user", "content": "my card"}], stream=True
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def gen(system: str = "") -> GenerationRequest:
    turns = (Message("system", system),) if system else ()
    return GenerationRequest("r", SamplingParams(8), messages=(*turns, Message("user", "card")))


def on(engine: RemoteEngine, work):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        await engine.start()
        try:
            return await work(engine)
        finally:
            await engine.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_an_unreachable_fleet_is_a_503_without_its_address(client: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailable) as info:
        on(RemoteEngine(url, "m", client=client), lambda e: e.check_health())  # type: ignore[arg-type]
    assert info.value.status_code == 503
    with pytest.raises(EngineUnavailable) as info:
        on(RemoteEngine(url, "m", client=client), lambda e: anext(e.generate(gen())))  # type: ignore[arg-type]
    assert "127.0.0.1" not in info.value.message


def test_the_fleets_refusals_are_translated(fleet) -> None:  # type: ignore[no-untyped-def]
    unknown = RemoteEngine(f"{fleet.url}/v1", "no-such-model")
    with pytest.raises(EngineError, match="HTTP 404") as info:
        on(unknown, lambda e: anext(e.generate(gen())))
    assert info.value.status_code == 500
    known = RemoteEngine(f"{fleet.url}/v1", "student")
    with pytest.raises(InvalidRequest, match="context") as bad:
        on(known, lambda e: anext(e.generate(gen(system="card " * 400))))
    assert bad.value.status_code == 400


def test_an_unreachable_fleet_reaches_the_client_as_an_openai_error(
    tiny_student, run_gateway, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    write_task(tmp_path, tiny_student.path, extra=remote_section(f"http://127.0.0.1:{free_port()}"))
    gw = run_gateway(Settings(tasks_dir=tmp_path, redis_url=""))
    with pytest.raises(openai.InternalServerError) as info:
        gw.client().chat.completions.create(
            model="banking77", messages=[{"role": "user", "content": "card"}]
        )
    assert info.value.status_code == 503
    assert info.value.body["code"] == "student_unavailable"  # type: ignore[index]
    assert math.isfinite(gw.metric("distillgate_requests_total"))


def test_token_texts_rebuild_the_answer_across_split_characters() -> None:
    from gateway.engines.remote import _texts

    def tok(raw: bytes) -> tuple[str, float, list[float], list[tuple[str, float]], bytes]:
        return (raw.decode(errors="replace"), 0.0, [], [], raw)

    # "é" split over two tokens, then the end token, which is not part of the text
    assert _texts("ét", [tok(b"\xc3"), tok(b"\xa9t"), tok(b"<|end|>")]) == ["", "ét", ""]
    # a stop string the server cut: the unmatched token gets nothing, the text stays whole
    assert _texts("card", [tok(b"ca"), tok(b"rd"), tok(b"_x")]) == ["ca", "rd", ""]
    assert "".join(_texts("abc", [tok(b"a"), tok(b"zz")])) == "abc"
