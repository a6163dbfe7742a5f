"""The CLI's one error path: every mistake ends as one line ``error: <what> — <what to do>`` on
stderr and exit code 2; ``cosi --debug ...`` (or COSI_DEBUG=1) shows the traceback instead.

Commands raise ordinary exceptions (ValueError, CheckpointError, FileNotFoundError, ...);
:class:`ErrorHandlingGroup`, the click group behind ``app``, turns them into that line, once, for
every command and sub-command."""

from __future__ import annotations

import os

import typer
from typer.core import TyperGroup

EXIT_USER = 2  # as click's usage errors and `_fail`
DEBUG = False  # set by `cosi --debug` (the app's callback) for this invocation
# click's own exceptions (usage errors, exit, abort) pass through to click: the classes of the click
# typer runs on (recent typer vendors its own copy), found from typer's exported ones
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS = (typer.Exit, typer.Abort, _CLICK_ERROR, KeyboardInterrupt, SystemExit)


def _user_errors() -> tuple:
    """The exception types that mean a wrong input, not a bug (imported lazily: the CLI starts fast)."""
    from ..core.integrators import NFEError
    from ..core.integrators.plan import ModelError
    from ..data import DatasetError
    from ..models.checkpoint import CheckpointError
    from ..models.official_psld import OfficialCheckpointError

    return (ValueError, TypeError, NotImplementedError, CheckpointError, OfficialCheckpointError, DatasetError,
            ModelError, NFEError, ImportError, OSError, EOFError, MemoryError)


def message(e: BaseException) -> str:
    """The one line for exception ``e``: its own message where it says what to do, else what the
    exception type implies."""
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, ImportError):
        what = f"{e.filename}: {e.strerror or type(e).__name__}"
        if isinstance(e, PermissionError):
            return f"{what} — choose a path you may write to (--out) or fix its permissions"
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            return f"{what} — a file stands where a folder is needed; choose another --out"
        if isinstance(e, IsADirectoryError):
            return f"{what} — a folder stands where a file is needed; pass a file"
        if isinstance(e, FileNotFoundError):
            return f"{what} — check the path"
        return f"{what} — check the path and the disk"
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, ImportError) and " — " not in text:
        return f"{text} — install the missing package (see README, 'Install')"
    if isinstance(e, EOFError):
        return "a file ended early (empty or truncated) — check the input files, or write them again"
    if isinstance(e, MemoryError):
        return "out of memory — use a smaller --n, --batch-size or --nfe"
    return text


def report(e: BaseException, user: bool) -> None:
    line = message(e) if user else (f"unexpected {type(e).__name__}: {' '.join(str(e).split())} — this may be a "
                                    "bug in cosi; rerun with `cosi --debug ...` for the traceback and report it")
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)


def debugging() -> bool:
    return DEBUG or bool(os.environ.get("COSI_DEBUG"))


class ErrorHandlingGroup(TyperGroup):
    """A typer group whose sub-commands' exceptions end as one ``error:`` line (see the module)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _PASS:
            raise
        except Exception as e:
            if debugging():
                raise
            report(e, isinstance(e, _user_errors()))
            raise typer.Exit(EXIT_USER) from None
