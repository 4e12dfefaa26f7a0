"""Routing: SQL text → split-endpoint route and session effects (pure functions, cached by text)."""

from ..engines.postgres.session_state import SessionEffects, SetCommand, session_effects
from .classify import Classification, Classifier, Route

__all__ = ["Classification", "Classifier", "Route", "SessionEffects", "SetCommand", "session_effects"]
