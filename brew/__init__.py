"""Brew: serve a decoder LLM that ranks candidates by reading text.

The core library (no gRPC): domain types, task templates, history policies,
verbalization and tokenization, label-token scoring, and the engines that run
the model (vLLM in production, transformers/torch as the reference).
"""

__version__ = "0.1.0"
