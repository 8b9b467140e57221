"""The floor benchmark's canned server answers like Brew's (every candidate
scored, the replica named, health SERVING) without scoring anything, and its
report states each part's spread and the sum of medians."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from brew import defaults
from brew.wire import parse_request_json
from loadtest.bench.floor import main, measure_own_work, report, spread, start_canned_server
from serving.client import RankingClient


@pytest.mark.asyncio
async def test_the_canned_server_answers_every_candidate_and_names_itself():
    server, port = await start_canned_server(0)
    request = parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    try:
        async with RankingClient(f"127.0.0.1:{port}") as client:
            assert await client.health() == health_pb2.HealthCheckResponse.SERVING
            served = await client.score_served(request)
    finally:
        await server.stop(None)
    assert served.replica == f"canned:{port}"
    assert [r.task for r in served.response.results] == [t.task for t in request.tasks]
    for result, task in zip(served.response.results, request.tasks):
        assert [s.item_id for s in result.scores] == [c.item_id for c in task.candidates]


def test_the_report_gives_each_parts_spread_and_the_sum_of_medians():
    assert spread([0.3, 0.1, 0.2]) == {"min": 0.1, "median": 0.2, "max": 0.3}
    text = report({"transport": [0.12, 0.10, 0.11], "engine client": [0.2, 0.22, 0.21]})
    assert "transport          0.100   0.110   0.120" in text
    assert "engine client      0.200   0.210   0.220" in text
    assert text.splitlines()[-1].endswith("0.320")


def test_brews_own_work_is_measured_per_candidate_on_the_same_requests():
    figures = measure_own_work(rate=4.0, duration=1.0, repeats=2)
    assert len(figures) == 2 and all(0 < figure < 50 for figure in figures)  # ms per candidate, one per repeat


def test_an_unknown_part_is_refused_naming_the_parts(capsys):
    with pytest.raises(SystemExit):
        main(["--rate", "11.4", "--parts", "transport,gpu"])
    assert "unknown gpu; choose from transport, engine-client, own-work" in capsys.readouterr().err


def test_the_rate_is_required_and_named_in_the_error(capsys):
    with pytest.raises(SystemExit):
        main(["--parts", "transport"])
    assert "--rate is required" in capsys.readouterr().err
