"""
The per-user token: kept in the user's state directory so that it
survives restarts (open tabs and scripts keep working), readable by that
user only.

C{$XDG_STATE_HOME/cluso-router/token}, by default
C{~/.local/state/cluso-router/token}; the directory is made C{0700} and
the file C{0600}. A token given with C{--token}, C{--token-file} or
C{CLUSO_TOKEN} wins over it (L{cluso_router.tap}).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cluso_router.security import check_token, generate_token

STATE_ENV: Final = "XDG_STATE_HOME"


def token_path(environ: Mapping[str, str] = os.environ) -> Path:
    """
    Where the per-user token is kept. A relative C{$XDG_STATE_HOME} is
    ignored, as the XDG specification says.
    """
    base = environ.get(STATE_ENV, "")
    if not os.path.isabs(base):
        home = environ.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "state")
    return Path(base) / "cluso-router" / "token"


def stored_token(path: Path, rotate: bool = False) -> str:
    """
    The token kept at C{path}, made (and kept) first when there is none,
    or replaced by a new one when C{rotate}.

    @raise ValueError: the file is unreadable, belongs to another user,
        holds no usable token, or cannot be written.
    """
    if not rotate:
        existing = _read(path)
        if existing is not None:
            return existing
    token = generate_token()
    try:
        _write(path, token, replace=rotate)
    except FileExistsError:
        # Another server made it first, between our read and our write.
        existing = _read(path)
        if existing is None:
            raise ValueError(f"cannot keep the token in {path}: it vanished") from None
        return existing
    except OSError as e:
        raise ValueError(f"cannot keep the token in {path}: {e.strerror}") from None
    return token


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot read the token file {path}: {e.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
            raise ValueError(
                f"{path} is not a file of this user; remove it, or give the token "
                "with --token-file or CLUSO_TOKEN"
            )
        if status.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        text = file.read().strip()
    try:
        return check_token(text)
    except ValueError as e:
        raise ValueError(
            f"the token in {path} is unusable ({e}); --rotate-token replaces it"
        ) from None


def _write(path: Path, token: str, replace: bool) -> None:
    """
    Write C{token} to a private temporary file beside C{path}, then put it
    in place at once: linked (failing if C{path} appeared meanwhile) or,
    when C{replace}, renamed over the old one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
