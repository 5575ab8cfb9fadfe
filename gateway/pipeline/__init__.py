"""The request pipeline, in the order a request meets it; no HTTP in here."""

from gateway.pipeline.prompt import example_request, student_turns, training_turns

__all__ = ["example_request", "student_turns", "training_turns"]
