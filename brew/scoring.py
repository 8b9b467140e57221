"""Score maths: label log-probabilities -> probabilities over the labels.

The score of a candidate is the softmax over the task's label logits, so a
binary task gives P(yes) / (P(yes) + P(no)). Engines return full-vocabulary
log-probabilities; they differ from logits by one constant per position, which
the softmax cancels, so no logit has to travel. The softmax subtracts the
maximum first, so extreme values (-1e4, or far apart) neither overflow nor
underflow to 0/0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def label_probabilities(label_logprobs: Sequence[float]) -> tuple[float, ...]:
    """Stable softmax over label log-probabilities (or logits).

    Labels the model gives no mass at all (-inf) get probability 0; if every
    label is -inf the model said nothing about them, and the answer is uniform.
    """
    if not label_logprobs:
        raise ValueError("label_probabilities needs at least one label")
    if any(math.isnan(value) for value in label_logprobs):
        raise ValueError(f"label log-probabilities contain NaN: {list(label_logprobs)}")
    peak = max(label_logprobs)
    if peak == -math.inf:
        return tuple(1.0 / len(label_logprobs) for _ in label_logprobs)
    weights = [math.exp(value - peak) for value in label_logprobs]
    total = math.fsum(weights)
    return tuple(weight / total for weight in weights)


def label_scores(label_logprobs: Sequence[float], softmax: bool) -> tuple[float, ...]:
    """The peer scoring APIs' two readings of the label log-probabilities
    (brew.query_items): normalized over the labels alone (`softmax`, as
    `label_probabilities`), or each label's own probability over the whole
    vocabulary (exp of its log-probability)."""
    if softmax:
        return label_probabilities(label_logprobs)
    return tuple(math.exp(value) for value in label_logprobs)
