"""Routing: SQL text → split-endpoint route and session effects (pure functions, cached by text)."""

from .classify import Classification, Classifier, Route
from .session_state import SessionEffects, SetCommand, session_effects

__all__ = ["Classification", "Classifier", "Route", "SessionEffects", "SetCommand", "session_effects"]
