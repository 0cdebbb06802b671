"""Benchmarks, each a script (``python bench/<name>.py``); a package so the import rules
can see what they import."""
