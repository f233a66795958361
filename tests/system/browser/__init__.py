"""
Browser tests: the client and the dashboard in Debian's Chromium, driven by
Playwright, against the real server in a child process.

A package, so its conftest does not shadow the C{conftest} module of
C{tests/} that other test modules import from.
"""
