"""Fault injection for load-test harnesses (SPEC §13): policy (sans-IO), words (parsing), injector (runtime)."""
