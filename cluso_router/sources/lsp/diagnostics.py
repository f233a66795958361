"""
Diagnostics as the C{diagnostics} channel carries them, and the current
set of them for clients that arrive late.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from lsprotocol import types

SEVERITY_NAMES: Final = {
    types.DiagnosticSeverity.Error: "error",
    types.DiagnosticSeverity.Warning: "warning",
    types.DiagnosticSeverity.Information: "info",
    types.DiagnosticSeverity.Hint: "hint",
}


def uri_to_relative(uri: str, root: str) -> str | None:
    """
    The root-relative, C{/}-separated path of a C{file:} URI, or C{None}
    when it is not a file inside C{root}.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = os.path.normpath(url2pathname(unquote(parsed.path)))
    relative = os.path.relpath(path, root)
    if relative == os.curdir or relative.startswith(os.pardir + os.sep) or relative == os.pardir:
        return None
    return relative.replace(os.sep, "/")


def convert(file: str, diagnostic: types.Diagnostic, default_source: str) -> dict[str, Any]:
    """
    One LSP diagnostic as an event entry: 1-based line and column.
    """
    start, end = diagnostic.range.start, diagnostic.range.end
    entry: dict[str, Any] = {
        "file": file,
        "line": start.line + 1,
        "column": start.character + 1,
        "endLine": end.line + 1,
        "endColumn": end.character + 1,
        "message": diagnostic.message,
        "severity": SEVERITY_NAMES.get(
            diagnostic.severity or types.DiagnosticSeverity.Error, "error"
        ),
        "source": diagnostic.source or default_source,
    }
    if diagnostic.code is not None:
        entry["code"] = diagnostic.code
    return entry


class DiagnosticsStore:
    """
    The latest diagnostics of every file, kept per language server so two
    servers reporting on one file do not overwrite each other.
    """

    def __init__(self) -> None:
        self._by_file: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def update(self, server: str, file: str, diagnostics: list[dict[str, Any]]) -> bool:
        """
        Record what C{server} now reports for C{file}.

        @return: whether that differs from what it reported before (a first
            report always does).
        """
        reports = self._by_file.setdefault(file, {})
        previous = reports.get(server)
        reports[server] = diagnostics
        return previous != diagnostics

    def files(self) -> list[str]:
        return list(self._by_file)

    def for_file(self, file: str) -> list[dict[str, Any]]:
        return [d for reports in self._by_file.get(file, {}).values() for d in reports]

    def forget(self, server: str, files: Iterable[str] | None = None) -> list[str]:
        """
        Drop what C{server} reported (for C{files}, or all); return the
        files that had diagnostics from it.
        """
        dropped = []
        for file in list(self._by_file if files is None else files):
            reports = self._by_file.get(file, {})
            if reports.pop(server, None):
                dropped.append(file)
            if not reports:
                self._by_file.pop(file, None)
        return dropped

    def snapshot(self, file: str | None = None) -> list[dict[str, Any]]:
        files = sorted(self._by_file) if file is None else [file]
        entries = [d for f in files for d in self.for_file(f)]
        return sorted(entries, key=lambda d: (d["file"], d["line"], d["column"]))
