"""
cluso-grep: a pure-Python stand-in for the part of ripgrep that
cluso-router's search runs, for machines where no C{rg} can be found.

It takes the same command lines the search source gives ripgrep (C{--files}
to list, C{--json} to search; see L{cluso_grep.__main__}), applies the same
ignore rules (L{cluso_grep.walk}), reads patterns in ripgrep's regular
expression syntax (L{cluso_grep.rustregex}) and answers in ripgrep's
C{--json} messages (L{cluso_grep.grep}), so one parser reads both.

It runs as a child process, C{python -P -m cluso_grep}, never in the
server: Python's C{re} holds the interpreter lock while it matches and
backtracks, so one unlucky pattern in a thread would stall the reactor,
while a child process can always be killed. It imports nothing from
cluso-router (whose imports take seconds) and starts in a few tens of
milliseconds.
"""

#: The exit status of a search that stopped at its C{--max-bytes} budget.
BUDGET_SPENT = 3
