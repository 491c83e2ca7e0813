"""Tests of sdcore, the pure-Python library (no Django, no database)."""
