"""
Plugin discovery as C{twistd cluso} sees it, in fresh interpreters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_plugin_modules_are_import_light() -> None:
    """
    Importing the built-in dropins (as twistd does to list its commands)
    does not import watchdog, pathspec, Autobahn, the server or the sources'
    implementation modules; those load only when the server starts.
    """
    code = (
        "import sys, cluso_plugins.files, cluso_plugins.git, cluso_plugins.validation\n"
        "heavy = [m for m in ('watchdog', 'pathspec', 'autobahn', 'cluso_router.service',"
        " 'cluso_router.router.router', 'cluso_router.sources.files',"
        " 'cluso_router.sources.git.service') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == ""


def test_list_sources_prints_discovered_sources(tmp_path: Path) -> None:
    """
    twistd cluso --list-sources prints each discovered source, whether it
    runs by default for the root, and its options, then exits 0.
    """
    from support.servers import list_sources

    out = list_sources(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"Event sources (default for {tmp_path}: ")
    files = next(line for line in lines if line.split()[:1] == ["files"])
    git = next(line for line in lines if line.split()[:1] == ["git"])
    assert files.split()[1] == "on"
    assert git.split()[1] == "off"
    assert any("--files-watch-delay=0.05" in line for line in lines)
    assert "Problems:" not in out.stdout
