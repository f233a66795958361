"""
Path confinement rules of L{Workspace.resolve}, on a real directory tree
with real symlinks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluso_router.workspace.paths import PathRefused, Workspace


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("a")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    os.symlink("/", root / "to-root")
    os.symlink(tmp_path / "outside", root / "out")
    os.symlink("src", root / "inner")
    os.symlink(".git", root / "hidden")
    return root


def refused(workspace: Workspace, path: str, **kwargs: bool) -> str:
    with pytest.raises(PathRefused) as info:
        workspace.resolve(path, **kwargs)
    return info.value.message


def test_relative_and_absolute_paths_inside_resolve(tree: Path) -> None:
    """
    A relative path is taken against the root; an absolute one is accepted
    when it lies inside the root (the original UI sends absolute paths).
    """
    workspace = Workspace(str(tree))
    relative = workspace.resolve("src/a.txt")
    absolute = workspace.resolve(str(tree / "src" / "a.txt"))
    assert relative.path == absolute.path == str(tree / "src" / "a.txt")
    assert relative.relative == "src/a.txt"
    assert workspace.resolve(".").is_root
    assert workspace.resolve("src/../src/a.txt").relative == "src/a.txt"


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "..",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%252e%252e%252fetc",
        "..%5c..%5cetc",
        "..\\..\\etc",
        "/etc/passwd",
        "src/../../x",
    ],
)
def test_traversal_is_refused_in_every_reading(tree: Path, path: str) -> None:
    """
    A path that leaves the root as given, percent-decoded once or twice, or
    with backslashes read as separators, is refused with the original's text.
    """
    assert refused(Workspace(str(tree)), path) == f"Path traversal detected: {path}"


@pytest.mark.parametrize("path", ["a/\x00.txt", "a/%00.txt", "a\nb", "x\x7f"])
def test_control_characters_are_refused(tree: Path, path: str) -> None:
    """
    NUL and other control characters, raw or percent-encoded, are refused.
    """
    assert "control character" in refused(Workspace(str(tree)), path)


def test_lone_surrogates_are_refused(tree: Path) -> None:
    """
    Text that is not Unicode (a lone surrogate from JSON) cannot name a file.
    """
    assert "not valid Unicode" in refused(Workspace(str(tree)), "a\ud800.txt")


@pytest.mark.parametrize(
    ("path", "part"),
    [
        (".git/config", ".git"),
        (".GIT/config", ".GIT"),
        (".Env", ".Env"),
        ("src/node_modules/x", "node_modules"),
        ("%2egit/config", ".git"),
        ("hidden/config", ".git"),
    ],
)
def test_blocked_names_in_any_case_or_through_a_link(tree: Path, path: str, part: str) -> None:
    """
    Blocked names match case-insensitively, percent-encoded, and also when
    a symlink leads into them.
    """
    assert refused(Workspace(str(tree)), path) == f"Access to sensitive directory blocked: {part}"


def test_env_variants_are_not_blocked(tree: Path) -> None:
    """
    Only the exact names are blocked, as in the original: .env.local is not.
    """
    assert Workspace(str(tree)).resolve(".env.local").relative == ".env.local"


@pytest.mark.parametrize("path", ["to-root/etc/passwd", "to-root", "out/secret.txt", "out"])
def test_symlinks_leading_outside_are_refused(tree: Path, path: str) -> None:
    """
    The real path, every symlink resolved, must stay inside the root.
    """
    message = refused(Workspace(str(tree)), path)
    assert message == f"Path leaves the workspace through a symlink: {path}"


def test_symlinked_intermediate_directory_is_resolved(tree: Path) -> None:
    """
    A symlinked directory is followed when it stays inside; a link to '/'
    reached through an inside link is still refused.
    """
    workspace = Workspace(str(tree))
    assert workspace.resolve("inner/a.txt").relative == "src/a.txt"
    os.symlink(tree / "to-root", tree / "src" / "deeper")
    assert "symlink" in refused(workspace, "inner/deeper/etc/passwd")


def test_the_link_itself_can_be_named_without_following(tree: Path) -> None:
    """
    With follow=False the last component is the link itself (to delete or
    rename it), while its parent is still resolved and checked; a link
    leading outside is refused even then.
    """
    workspace = Workspace(str(tree))
    link = workspace.resolve("inner", follow=False)
    assert link.path == str(tree / "inner")
    assert link.relative == "inner"
    assert "symlink" in refused(workspace, "out", follow=False)
    assert "symlink" in refused(workspace, "out/secret.txt", follow=False)
    assert "blocked" in refused(workspace, "hidden", follow=False)


def test_a_non_string_path_is_refused(tree: Path) -> None:
    """
    Only strings are paths.
    """
    assert refused(Workspace(str(tree)), 5) == "path must be a string"  # type: ignore[arg-type]
