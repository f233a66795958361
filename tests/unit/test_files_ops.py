"""
The files operations layer on a real directory: the original's data shapes
and error texts, atomic writes, glob and tree semantics, and the file
events each mutation announces.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from cluso_router.router.procedures import ProcedureError
from cluso_router.service import EventBroadcaster
from cluso_router.testing import RecordingPublisher
from cluso_router.workspace.files import TEMP_SUFFIX, FileOperations
from cluso_router.workspace.glob import expand_braces
from cluso_router.workspace.ledger import FileChangeLedger
from cluso_router.workspace.paths import Workspace


@dataclass
class Files:
    ops: FileOperations
    root: Path
    published: RecordingPublisher

    def events(self) -> list[tuple[str, str]]:
        return [(d["file"], d["event"]) for channel, d in self.published.published]


@pytest.fixture
def files(tmp_path: Path) -> Files:
    from twisted.internet import reactor

    root = tmp_path / "root"
    root.mkdir()
    published = RecordingPublisher()
    ledger = FileChangeLedger(EventBroadcaster(published), clock=reactor)
    return Files(FileOperations(Workspace(str(root)), ledger, reactor=reactor), root, published)


async def failure(d: Any) -> str:
    with pytest.raises(ProcedureError) as info:
        await d
    return info.value.message


@pytest_twisted.ensureDeferred
async def test_read_returns_the_original_shape(files: Files) -> None:
    """
    read gives {path (as sent), content, encoding: utf-8}; invalid UTF-8
    bytes become U+FFFD.
    """
    (files.root / "a.txt").write_bytes(b"ok \xff\n")
    assert await files.ops.read_file("a.txt") == {
        "path": "a.txt",
        "content": "ok \ufffd\n",
        "encoding": "utf-8",
    }


@pytest_twisted.ensureDeferred
async def test_read_errors_use_the_original_texts(files: Files) -> None:
    """
    Missing fields, missing files and directories fail with the original's
    prefixed messages and Node's errno text.
    """
    (files.root / "d").mkdir()
    assert await failure(files.ops.read_file()) == "Missing required field: path"
    assert await failure(files.ops.read_file("")) == "Missing required field: path"
    assert await failure(files.ops.read_file("nope.txt")) == (
        "Failed to read file: ENOENT: no such file or directory, open 'nope.txt'"
    )
    assert await failure(files.ops.read_file("d")) == (
        "Failed to read file: EISDIR: illegal operation on a directory, open 'd'"
    )
    assert await failure(files.ops.read_file("../x")) == (
        "Failed to read file: Path traversal detected: ../x"
    )


@pytest_twisted.ensureDeferred
async def test_read_refuses_a_fifo_without_blocking(files: Files) -> None:
    """
    A named pipe is refused at once instead of blocking a thread forever.
    """
    os.mkfifo(files.root / "pipe")
    message = await failure(files.ops.read_file("pipe"))
    assert message == "Failed to read file: EINVAL: not a regular file, open 'pipe'"


@pytest_twisted.ensureDeferred
async def test_write_creates_parents_and_reports_utf8_bytes(files: Files) -> None:
    """
    write creates missing parent directories, counts UTF-8 bytes, and
    announces addDir for each new directory, then add (change when the file
    existed).
    """
    result = await files.ops.write_file("n/m/x.txt", "h\u00e9")
    assert result == {"path": "n/m/x.txt", "bytesWritten": 3}
    assert (files.root / "n/m/x.txt").read_text("utf-8") == "h\u00e9"
    await files.ops.write_file("n/m/x.txt", "again")
    assert files.events() == [
        ("n", "addDir"),
        ("n/m", "addDir"),
        ("n/m/x.txt", "add"),
        ("n/m/x.txt", "change"),
    ]


@pytest_twisted.ensureDeferred
async def test_write_keeps_the_mode_and_leaves_no_temporary_file(files: Files) -> None:
    """
    Replacing a file keeps its permission bits, and the temporary file used
    for the atomic replace is gone afterwards.
    """
    target = files.root / "run.sh"
    target.write_text("old")
    target.chmod(0o751)
    await files.ops.write_file("run.sh", "new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    assert target.read_text() == "new"
    assert [p.name for p in files.root.iterdir()] == ["run.sh"]


@pytest_twisted.ensureDeferred
async def test_write_validates_content(files: Files) -> None:
    """
    content is required (null counts as missing) and must be a string; a
    lone surrogate is written as U+FFFD like a JavaScript string.
    """
    assert await failure(files.ops.write_file("a", None)) == "Missing required field: content"
    assert await failure(files.ops.write_file("a", 5)) == (
        "Failed to write file: content must be a string"
    )
    assert (await files.ops.write_file("s.txt", "x\ud800"))["bytesWritten"] == 4
    assert (files.root / "s.txt").read_text("utf-8") == "x\ufffd"


@pytest_twisted.ensureDeferred
async def test_write_onto_the_root_or_a_directory_is_refused_before_anything_is_made(
    files: Files, tmp_path: Path
) -> None:
    """
    Writing to the root would put a temporary file beside it, outside the
    workspace; it is refused first, and nothing appears next to the root.
    """
    (files.root / "d").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    for path in (".", str(files.root), "d"):
        assert "EISDIR" in await failure(files.ops.write_file(path, "x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest_twisted.ensureDeferred
async def test_twenty_concurrent_writes_leave_one_complete_content(files: Files) -> None:
    """
    20 writers of different full contents to one file, at once: the file
    ends as exactly one writer's complete content, and while they run a
    reader only ever sees a complete content.
    """
    contents = [(f"{i:02d}" * 50_000) for i in range(20)]
    (files.root / "f.txt").write_text(contents[0])
    seen: list[str] = []

    async def reader() -> None:
        for _ in range(30):
            seen.append((await files.ops.read_file("f.txt"))["content"])

    writes = [ensureDeferred(files.ops.write_file("f.txt", c)) for c in contents]
    reads = ensureDeferred(reader())
    results = await DeferredList([*writes, reads], fireOnOneErrback=True, consumeErrors=True)
    assert all(ok for ok, _ in results)
    final = (files.root / "f.txt").read_text()
    assert final in contents
    assert all(s in contents for s in seen)
    assert not [p for p in files.root.iterdir() if p.name.endswith(TEMP_SUFFIX)]


@pytest_twisted.ensureDeferred
async def test_create_is_exclusive(files: Files) -> None:
    """
    create writes a new file (content optional) and refuses an existing one
    with the original's text, leaving it untouched.
    """
    assert await files.ops.create_file("c/new.txt") == {"path": "c/new.txt"}
    assert (files.root / "c/new.txt").read_text() == ""
    (files.root / "c/new.txt").write_text("keep")
    message = await failure(files.ops.create_file("c/new.txt", "other"))
    assert message == "File already exists: c/new.txt"
    assert (files.root / "c/new.txt").read_text() == "keep"
    assert files.events() == [("c", "addDir"), ("c/new.txt", "add")]


@pytest_twisted.ensureDeferred
async def test_delete_file_refuses_directories(files: Files) -> None:
    """
    delete removes a file and says unlink; a directory is refused with the
    original's text.
    """
    (files.root / "d").mkdir()
    (files.root / "f").write_text("x")
    assert await failure(files.ops.delete_file("d")) == (
        "Cannot delete directory with deleteFile: d"
    )
    assert await files.ops.delete_file("f") == {"path": "f"}
    assert not (files.root / "f").exists()
    assert files.events() == [("f", "unlink")]


@pytest_twisted.ensureDeferred
async def test_delete_of_a_symlink_removes_the_link_not_its_target(
    files: Files, tmp_path: Path
) -> None:
    """
    Deleting a symlink removes the link, not its target; a link leading
    outside is refused and stays.
    """
    (files.root / "target.txt").write_text("keep")
    os.symlink("target.txt", files.root / "link")
    await files.ops.delete_file("link")
    assert (files.root / "target.txt").read_text() == "keep"
    assert not os.path.lexists(files.root / "link")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    os.symlink(outside, files.root / "out")
    assert "symlink" in await failure(files.ops.delete_file("out"))
    assert os.path.lexists(files.root / "out")
    assert outside.read_text() == "keep"


@pytest_twisted.ensureDeferred
async def test_rename_moves_files_and_directories(files: Files) -> None:
    """
    rename creates the destination's parents, refuses an existing
    destination, moves directories too, and announces the removal and the
    addition.
    """
    (files.root / "a.txt").write_text("a")
    (files.root / "b.txt").write_text("b")
    (files.root / "dir").mkdir()
    assert await failure(files.ops.rename_file("a.txt")) == "Missing required field: newPath"
    assert await failure(files.ops.rename_file("a.txt", "b.txt")) == (
        "Destination already exists: b.txt"
    )
    assert await files.ops.rename_file("a.txt", "x/y.txt") == {
        "oldPath": "a.txt",
        "newPath": "x/y.txt",
    }
    await files.ops.rename_file("dir", "moved")
    assert (files.root / "x/y.txt").read_text() == "a"
    assert (files.root / "moved").is_dir()
    assert files.events() == [
        ("a.txt", "unlink"),
        ("x", "addDir"),
        ("x/y.txt", "add"),
        ("dir", "unlinkDir"),
        ("moved", "addDir"),
    ]
    assert "workspace root" in await failure(files.ops.rename_file(".", "elsewhere"))


@pytest_twisted.ensureDeferred
async def test_copy_copies_files_only_and_never_overwrites(files: Files) -> None:
    """
    copy duplicates a file into new parents, refuses directories and
    existing destinations with the original's texts.
    """
    (files.root / "a.txt").write_text("a")
    (files.root / "d").mkdir()
    assert await files.ops.copy_file("a.txt", "n/b.txt") == {
        "srcPath": "a.txt",
        "destPath": "n/b.txt",
    }
    assert (files.root / "n/b.txt").read_text() == "a"
    assert await failure(files.ops.copy_file("d", "e")) == "Cannot copy directory with copyFile: d"
    assert await failure(files.ops.copy_file("a.txt", "n/b.txt")) == (
        "Destination already exists: n/b.txt"
    )
    assert files.events() == [("n", "addDir"), ("n/b.txt", "add")]


@pytest_twisted.ensureDeferred
async def test_directories_are_made_and_removed(files: Files) -> None:
    """
    mkdir is recursive and fine when the directory exists; rmdir removes a
    tree, also a plain file, fails on a missing path, and never removes
    the root.
    """
    assert await files.ops.create_directory("p/q") == {"path": "p/q"}
    assert await files.ops.create_directory("p/q") == {"path": "p/q"}
    (files.root / "p/q/f").write_text("x")
    assert await files.ops.delete_directory("p") == {"path": "p"}
    assert not (files.root / "p").exists()
    assert await failure(files.ops.delete_directory("p")) == (
        "Failed to delete directory: ENOENT: no such file or directory, rm 'p'"
    )
    for root in (".", str(files.root), "./", "x/.."):
        message = await failure(files.ops.delete_directory(root))
        assert message == f"Failed to delete directory: Cannot delete the workspace root: {root}"
    assert files.root.is_dir()
    assert files.events() == [("p", "addDir"), ("p/q", "addDir"), ("p", "unlinkDir")]


@pytest_twisted.ensureDeferred
async def test_exists_is_false_for_refused_paths(files: Files, tmp_path: Path) -> None:
    """
    exists answers true/false, and false (never an error) for a traversal,
    a blocked name or a symlink leading out.
    """
    (files.root / "a").write_text("a")
    (files.root / ".git").mkdir()
    os.symlink(tmp_path, files.root / "out")
    assert await files.ops.exists("a") is True
    assert await files.ops.exists("b") is False
    for refused in ("../a", ".git", "out", str(tmp_path)):
        assert await files.ops.exists(refused) is False
    assert await failure(files.ops.exists()) == "Missing required field: path"


@pytest_twisted.ensureDeferred
async def test_stat_shape(files: Files) -> None:
    """
    stat echoes the path and gives type flags, size, ISO times and the full
    st_mode (type bits included).
    """
    (files.root / "a").write_text("abc")
    os.utime(files.root / "a", (1733758245.123, 1733758245.123))
    result = await files.ops.stat("a")
    assert result["path"] == "a"
    assert result["isFile"] is True
    assert result["isDirectory"] is False
    assert result["size"] == 3
    assert result["modified"] == "2024-12-09T15:30:45.123Z"
    assert result["accessed"] == "2024-12-09T15:30:45.123Z"
    assert result["mode"] == (files.root / "a").stat().st_mode
    assert result["created"].endswith("Z")


@pytest_twisted.ensureDeferred
async def test_list_shape_and_paths(files: Files, tmp_path: Path) -> None:
    """
    list gives FileInfo entries whose path joins the requested path with
    the name; a symlink to a directory is not a directory; a link leading
    outside shows the link's own size, not its target's.
    """
    (files.root / "d").mkdir()
    (files.root / "d" / "f.txt").write_text("12345")
    os.symlink("d", files.root / "dl")
    big = tmp_path / "big"
    big.write_text("x" * 1000)
    os.symlink(big, files.root / "out")
    by_name = {e["name"]: e for e in await files.ops.list_directory()}
    assert set(by_name) == {"d", "dl", "out"}
    assert by_name["dl"]["isDirectory"] is False
    assert by_name["out"]["size"] != 1000
    (entry,) = await files.ops.list_directory("d/")
    assert entry["path"] == "d/f.txt"
    assert entry["size"] == 5
    absolute = await files.ops.list_directory(str(files.root / "d"))
    assert absolute[0]["path"] == str(files.root / "d" / "f.txt")


@pytest_twisted.ensureDeferred
async def test_tree_shape_order_depth_and_ignore(files: Files) -> None:
    """
    tree: the root is '.', children sorted directories first then by name,
    dot names and the default ignore list skipped, a directory at maxDepth
    has empty children, and a given ignore list replaces the default.
    """
    for d in ("b/c", "A", "dist", ".hidden", "node_modules"):
        (files.root / d).mkdir(parents=True)
    (files.root / "z.txt").write_text("z")
    (files.root / "b/c/deep.txt").write_text("d")
    tree = await files.ops.get_tree(".", 1)
    assert tree["path"] == "."
    assert tree["name"] == files.root.name
    assert [c["name"] for c in tree["children"]] == ["A", "b", "z.txt"]
    b = tree["children"][1]
    assert b == {"name": "b", "path": "b", "isDirectory": True, "size": b["size"], "children": []}
    assert "children" not in tree["children"][2]
    full = await files.ops.get_tree(".", 10, ["A"])
    names = [c["name"] for c in full["children"]]
    assert names == ["b", "dist", "z.txt"]
    assert full["children"][0]["children"][0]["children"][0]["path"] == "b/c/deep.txt"
    assert await failure(files.ops.get_tree("missing")) == "Failed to build tree for path: missing"
    assert await failure(files.ops.get_tree(".", -1)) == (
        "Failed to get tree: maxDepth must not be negative"
    )


@pytest_twisted.ensureDeferred
async def test_tree_does_not_loop_through_symlinks(files: Files) -> None:
    """
    A symlink back to an ancestor is not followed, so a deep maxDepth ends.
    """
    (files.root / "a").mkdir()
    os.symlink("..", files.root / "a" / "up")
    tree = await files.ops.get_tree(".", 1000)
    assert tree["children"][0]["children"] == []


def test_brace_expansion() -> None:
    """
    Brace groups expand (nested, escaped braces literal, no comma literal).
    """
    assert expand_braces("*.{ts,tsx}") == ["*.ts", "*.tsx"]
    assert expand_braces("{a,b{c,d}}x") == ["ax", "bcx", "bdx"]
    assert expand_braces("{a}") == ["{a}"]
    assert expand_braces("\\{a,b}") == ["\\{a,b}"]
    assert expand_braces("{a,a}") == ["a"]
    with pytest.raises(ProcedureError):
        expand_braces("{a,b}" * 11)


@pytest_twisted.ensureDeferred
async def test_glob_semantics(files: Files) -> None:
    """
    glob: ** matches zero or more directories (so top-level files too),
    braces expand, wildcards skip dot names and blocked names, results are
    sorted and relative to the root.
    """
    for path in (
        "a.ts",
        "b.tsx",
        "c.js",
        "src/d.ts",
        "src/x/e.ts",
        ".hidden/f.ts",
        "node_modules/g.ts",
        "src/.h.ts",
    ):
        (files.root / path).parent.mkdir(parents=True, exist_ok=True)
        (files.root / path).write_text("")
    assert await files.ops.glob("**/*.{ts,tsx}") == ["a.ts", "b.tsx", "src/d.ts", "src/x/e.ts"]
    assert await files.ops.glob("*.ts") == ["a.ts"]
    assert await files.ops.glob("src/**") == ["src", "src/d.ts", "src/x", "src/x/e.ts"]
    assert await files.ops.glob("src/*/") == ["src/x"]
    assert await files.ops.glob("[ab].*") == ["a.ts", "b.tsx"]
    assert await files.ops.glob("[!ab].*") == ["c.js"]
    assert await files.ops.glob("src/.*.ts") == ["src/.h.ts"]
    assert await files.ops.glob("node_modules/*.ts") == []
    assert await files.ops.glob("*.ts", "src") == ["src/d.ts"]
    assert await failure(files.ops.glob("../*")) == "Failed to glob: Path traversal detected: ../*"
    assert await failure(files.ops.glob()) == "Missing required field: pattern"


@pytest_twisted.ensureDeferred
async def test_glob_does_not_follow_links_outside(files: Files, tmp_path: Path) -> None:
    """
    A symlink leading outside is never matched or entered by a glob.
    """
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "s.ts").write_text("")
    os.symlink(tmp_path / "o", files.root / "out")
    os.symlink(tmp_path / "o" / "s.ts", files.root / "s.ts")
    assert await files.ops.glob("**/*.ts") == []
    assert await files.ops.glob("out/*.ts") == []
    assert await files.ops.glob("*") == []


@pytest_twisted.ensureDeferred
async def test_cwd(files: Files) -> None:
    """
    cwd gives the absolute root and its last path segment.
    """
    assert await files.ops.get_cwd() == {"cwd": str(files.root), "name": "root"}


@pytest_twisted.ensureDeferred
async def test_large_reads_do_not_block_the_reactor(files: Files) -> None:
    """
    An 8 MiB read runs in a thread: the call returns before the read is
    done, leaving the reactor free meanwhile (a read on the reactor thread
    would have finished before returning).
    """
    (files.root / "big").write_bytes(b"x" * (8 * 1024 * 1024))
    read: Deferred[Any] = ensureDeferred(files.ops.read_file("big"))
    assert not read.called
    result = await read
    assert len(result["content"]) == 8 * 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_a_read_larger_than_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    """
    A file above max_read_bytes is refused with a message naming the
    limit and its option, without its content being read; at the limit it
    is read whole.
    """
    (tmp_path / "big.bin").write_bytes(b"x" * 1001)
    (tmp_path / "ok.txt").write_bytes(b"y" * 1000)
    files = FileOperations(Workspace(str(tmp_path)), reactor=reactor, max_read_bytes=1000)
    with pytest.raises(ProcedureError, match=r"larger than the 1000 bytes.*--max-read-bytes"):
        await files.read_file("big.bin")
    assert (await files.read_file("ok.txt"))["content"] == "y" * 1000
