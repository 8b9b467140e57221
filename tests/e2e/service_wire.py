"""What every end-to-end test sends and reads: the example request (and a
large one built from it), scores by (task, item), and /metrics parsed with
Prometheus' own text parser."""

from __future__ import annotations

import copy
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from brew import defaults
from brew.v1 import ranking_pb2 as pb
from brew.wire import parse_request_json


def example_json() -> str:
    return defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")


def example_request() -> pb.ScoreCandidatesRequest:
    return parse_request_json(example_json())


def job_request(candidates: int, request_id: str = "jobs") -> pb.ScoreCandidatesRequest:
    """The example member with `candidates` job_apply candidates: the
    example's jobs with distinct item ids and distinct companies, so every
    candidate is new work (identical prompts would come from vLLM's cache)."""
    request = example_request()
    jobs = list(request.tasks[0].candidates)
    task = pb.TaskCandidates(task="job_apply")
    for index in range(candidates):
        item = copy.deepcopy(jobs[index % len(jobs)])
        item.item_id = f"job-{index}"
        item.fields["company"] = f"{item.fields['company']} {index}"
        task.candidates.append(item)
    del request.tasks[:]
    request.tasks.append(task)
    request.request_id = request_id
    return request


def scores(response: pb.ScoreCandidatesResponse) -> dict[tuple[str, str], float]:
    return {(r.task, s.item_id): s.score for r in response.results for s in r.scores}


class Metrics:
    """One scrape of /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def has(self, name: str) -> bool:
        return any(sample.name == name for sample in self.samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            sample.value for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def scrape_url(url: str, timeout: float = 10.0) -> Metrics:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        assert answer.status == 200
        return Metrics(answer.read().decode("utf-8"))
