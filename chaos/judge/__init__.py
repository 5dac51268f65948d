"""Judging a run: its journal folded into a timeline, and the named verdicts decided from it."""
