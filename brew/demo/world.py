"""A synthetic professional network with a hidden ground truth.

Members have a title, seniority, skills, location, company and school, plus
hidden traits the model can only infer from their history: the job family
they are drifting towards (career changers), the post format they like, and
whether they connect with colleagues or schoolmates. Every action has a known
probability given (member, item), so the best achievable AUC of each task is
known and a model's AUC can be read against it.

Everything is drawn from a `random.Random(seed)`: the same seed gives the same
world, which makes training, evaluation and examples reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from brew.types import Interaction, Item, Member


@dataclass(frozen=True)
class Family:
    titles: tuple[str, ...]
    skills: tuple[str, ...]
    topics: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "software": Family(
        ("software engineer", "backend developer", "frontend developer"),
        ("java", "golang", "react", "kubernetes", "typescript", "rust"),
        ("cloud", "devops", "opensource"),
    ),
    "data": Family(
        ("data scientist", "data analyst", "ml engineer"),
        ("python", "sql", "statistics", "spark", "pandas", "tableau"),
        ("ai", "analytics", "dashboards"),
    ),
    "design": Family(
        ("product designer", "ux designer", "graphic designer"),
        ("figma", "typography", "prototyping", "illustration", "sketching", "usability"),
        ("design", "branding", "accessibility"),
    ),
    "sales": Family(
        ("account executive", "sales manager", "business developer"),
        ("negotiation", "crm", "prospecting", "forecasting", "salesforce", "closing"),
        ("sales", "leadership", "startups"),
    ),
    "marketing": Family(
        ("marketing manager", "content strategist", "seo specialist"),
        ("seo", "copywriting", "campaigns", "social", "advertising", "newsletters"),
        ("marketing", "growth", "content"),
    ),
}
FAMILY_NAMES = tuple(FAMILIES)
TITLE_FAMILY = {title: name for name, family in FAMILIES.items() for title in family.titles}
TOPIC_FAMILY = {topic: name for name, family in FAMILIES.items() for topic in family.topics}
SENIORITIES = ("junior", "mid", "senior", "lead")
LOCATIONS = ("berlin", "paris", "london", "madrid", "amsterdam", "lisbon")
COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne")
SCHOOLS = ("oxford", "sorbonne", "eth", "tum", "delft", "bocconi")
POST_FORMATS = ("article", "video", "poll")
AUTHORS = ("colleague", "influencer", "company")

JOB_OUTCOMES = ("applied", "viewed", "dismissed", "none")
START_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def softmax(values: Sequence[float]) -> tuple[float, ...]:
    peak = max(values)
    weights = [math.exp(value - peak) for value in values]
    total = sum(weights)
    return tuple(weight / total for weight in weights)


@dataclass(frozen=True)
class Persona:
    """A member and the hidden traits that drive their actions."""

    member: Member
    family: str
    interest: str
    seniority: int
    skills: frozenset[str]
    likes_format: str
    networks_by: str  # "company" or "school"


# --- ground truth ---------------------------------------------------------

def job_outcome_probs(persona: Persona, job: Item) -> tuple[float, ...]:
    """P(applied, viewed, dismissed, none) of a member shown a job."""
    fields = job.fields
    family = TITLE_FAMILY[fields["title"]]
    seniority_gap = abs(SENIORITIES.index(fields["seniority"]) - persona.seniority)
    near = fields["location"] == persona.member.profile["location"] or fields["remote"] == "yes"
    overlap = min(2, len(persona.skills & set(fields["skills"].split(", "))))
    affinity = (
        2.0 * (family == persona.interest)
        + 0.7 * (family == persona.family)
        - 0.9 * seniority_gap
        + 0.9 * near
        + 0.4 * overlap
    )
    return softmax((1.1 * affinity - 2.6, 0.5 * affinity - 0.6, -0.6 * affinity + 0.2, 0.4))


def engage_prob(persona: Persona, post: Item) -> float:
    """P(the member engages with a post shown in their feed)."""
    fields = post.fields
    family = TOPIC_FAMILY[fields["topic"]]
    return sigmoid(
        -2.6
        + 2.2 * (family == persona.interest)
        + 0.6 * (family == persona.family)
        + 1.3 * (fields["format"] == persona.likes_format)
        + 0.6 * (fields["author"] == "colleague")
    )


def connect_prob(persona: Persona, other: Item) -> float:
    """P(the member sends a connection request to a suggested member)."""
    fields, profile = other.fields, persona.member.profile
    same_company = fields["company"] == profile["company"]
    same_school = fields["school"] == profile["school"]
    by_company = persona.networks_by == "company"
    return sigmoid(
        -2.8
        + (2.2 if by_company else 0.5) * same_company
        + (0.5 if by_company else 2.2) * same_school
        + 0.8 * (fields["location"] == profile["location"])
        + 0.8 * (TITLE_FAMILY[fields["title"]] == persona.family)
    )


# --- generation -------------------------------------------------------------

class World:
    """Draws personas, items, histories and candidates from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._next_id = 0

    def _id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}-{self._next_id}"

    def _family_bias(self, persona: Persona | None, interest_share: float, current_share: float) -> str:
        roll = self.rng.random()
        if persona is not None and roll < interest_share:
            return persona.interest
        if persona is not None and roll < interest_share + current_share:
            return persona.family
        return self.rng.choice(FAMILY_NAMES)

    def job(self, persona: Persona | None = None, interest_share: float = 0.4, current_share: float = 0.2) -> Item:
        family = FAMILIES[self._family_bias(persona, interest_share, current_share)]
        return Item(
            item_id=self._id("job"),
            entity_type="job",
            fields={
                "title": self.rng.choice(family.titles),
                "seniority": self.rng.choice(SENIORITIES),
                "location": self.rng.choice(LOCATIONS),
                "remote": "yes" if self.rng.random() < 0.25 else "no",
                "skills": ", ".join(self.rng.sample(family.skills, 2)),
                "company": self.rng.choice(COMPANIES),
            },
        )

    def post(self, persona: Persona | None = None, interest_share: float = 0.4, current_share: float = 0.2) -> Item:
        family = FAMILIES[self._family_bias(persona, interest_share, current_share)]
        return Item(
            item_id=self._id("post"),
            entity_type="post",
            fields={
                "topic": self.rng.choice(family.topics),
                "format": self.rng.choice(POST_FORMATS),
                "author": self.rng.choice(AUTHORS),
            },
        )

    def profile_item(self, persona: Persona | None = None) -> Item:
        """Another member, as a connection suggestion (biased towards the
        persona's company, school and family, as a real candidate generator is)."""
        profile = persona.member.profile if persona else {}
        pick = self.rng.random
        return Item(
            item_id=self._id("member"),
            entity_type="member",
            fields={
                "title": self.rng.choice(
                    FAMILIES[self._family_bias(persona, 0.0, 0.4)].titles
                ),
                "seniority": self.rng.choice(SENIORITIES),
                "location": profile["location"] if persona and pick() < 0.3 else self.rng.choice(LOCATIONS),
                "company": profile["company"] if persona and pick() < 0.3 else self.rng.choice(COMPANIES),
                "school": profile["school"] if persona and pick() < 0.3 else self.rng.choice(SCHOOLS),
            },
        )

    def persona(self, history_length: tuple[int, int] = (12, 24)) -> Persona:
        family = self.rng.choice(FAMILY_NAMES)
        interest = family if self.rng.random() < 0.6 else self.rng.choice(FAMILY_NAMES)
        seniority = self.rng.randrange(len(SENIORITIES))
        skills = self.rng.sample(FAMILIES[family].skills, 3)
        if interest != family and self.rng.random() < 0.5:
            skills[-1] = self.rng.choice(FAMILIES[interest].skills)
        profile = {
            "title": self.rng.choice(FAMILIES[family].titles),
            "seniority": SENIORITIES[seniority],
            "location": self.rng.choice(LOCATIONS),
            "skills": ", ".join(skills),
            "company": self.rng.choice(COMPANIES),
            "school": self.rng.choice(SCHOOLS),
        }
        bare = Persona(
            member=Member(member_id=self._id("m"), profile=profile),
            family=family,
            interest=interest,
            seniority=seniority,
            skills=frozenset(skills),
            likes_format=self.rng.choice(POST_FORMATS),
            networks_by=self.rng.choice(("company", "school")),
        )
        history = self.history(bare, self.rng.randint(*history_length))
        member = Member(member_id=bare.member.member_id, profile=profile, history=history)
        return Persona(member, family, interest, seniority, bare.skills, bare.likes_format, bare.networks_by)

    def history(self, persona: Persona, length: int) -> tuple[Interaction, ...]:
        """Past interactions drawn from the same ground truth as the tasks,
        so the history carries the hidden traits."""
        events: list[Interaction] = []
        clock = START_TIME + self.rng.uniform(0, 86_400 * 30)
        for _ in range(length):
            clock += self.rng.uniform(600, 86_400 * 3)
            kind = self.rng.random()
            if kind < 0.45:
                item = self.job(persona, interest_share=0.5, current_share=0.2)
                outcome = self.rng.choices(JOB_OUTCOMES, job_outcome_probs(persona, item))[0]
                action = "impression" if outcome == "none" else outcome
            elif kind < 0.8:
                item = self.post(persona, interest_share=0.5, current_share=0.2)
                action = "liked" if self.rng.random() < engage_prob(persona, item) else "impression"
            else:
                item = self.profile_item(persona)
                action = "connected" if self.rng.random() < connect_prob(persona, item) else "impression"
            events.append(Interaction(action=action, item=item, timestamp=clock))
            if action in ("viewed", "applied") and self.rng.random() < 0.15:
                clock += self.rng.uniform(60, 3_600)  # a repeat visit: dedupe keeps the strongest
                events.append(Interaction(action="viewed", item=item, timestamp=clock))
        return tuple(events)


@dataclass(frozen=True)
class LabeledCandidate:
    """A candidate with its true label distribution and one sampled outcome."""

    item: Item
    true_probs: tuple[float, ...]  # in the task's label order
    outcome: int  # index of the sampled label


# Per task: how candidates are drawn and their true label distribution, in
# the label order of the shipped task configs (positive first).
def _job_candidate(world: World, persona: Persona) -> tuple[Item, tuple[float, ...]]:
    job = world.job(persona)
    return job, job_outcome_probs(persona, job)


def _post_candidate(world: World, persona: Persona) -> tuple[Item, tuple[float, ...]]:
    post = world.post(persona)
    p = engage_prob(persona, post)
    return post, (p, 1.0 - p)


def _member_candidate(world: World, persona: Persona) -> tuple[Item, tuple[float, ...]]:
    other = world.profile_item(persona)
    p = connect_prob(persona, other)
    return other, (p, 1.0 - p)


CANDIDATE_DRAWS = {
    "job_apply": _job_candidate,
    "feed_engagement": _post_candidate,
    "pymk_connect": _member_candidate,
}
DEMO_TASKS = tuple(CANDIDATE_DRAWS)


def labeled_candidates(world: World, persona: Persona, task: str, count: int) -> list[LabeledCandidate]:
    """`count` candidates for one task, each with a sampled outcome."""
    draw = CANDIDATE_DRAWS[task]
    out = []
    for _ in range(count):
        item, probs = draw(world, persona)
        outcome = world.rng.choices(range(len(probs)), probs)[0]
        out.append(LabeledCandidate(item=item, true_probs=probs, outcome=outcome))
    return out
