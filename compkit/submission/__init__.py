"""Submissions: the competition's CSV layouts and run-length encoding."""
