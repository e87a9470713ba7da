"""Checkers: see lmcore.check."""
