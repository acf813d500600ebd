"""Tailor: measure and build the cheapest adaptation of an open LLM that works on your task."""

__version__ = "0.1.0"
