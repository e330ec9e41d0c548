"""A job's console (everything its process writes to stdout and stderr) into ``<run folder>/console.log``.

Several jobs sharing one terminal (``hydra/launcher=gpu_shared``) interleave their progress bars into an unreadable
stream: four 240-epoch jobs at a time wrote 15 MB of it in 75 minutes. Each job's console goes to its own run folder
instead, beside ``train.log``, and the terminal gets one line when a job starts and one when it ends.

Written by hand: ``contextlib.redirect_stdout`` swaps only Python's ``sys.stdout``, while progress bars, Lightning's
messages and the warnings of C extensions may reach the file descriptors 1 and 2 by other ways; Hydra's launchers
leave the workers' output on the terminal.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

CONSOLE = "console.log"


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[Callable[[str], None]]:
    """Within: file descriptors 1 and 2 of this process append to ``path`` (a header line marks each attempt). Yields
    ``say(line)``, which writes one line to the terminal this process had before. Both come back after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _flush()
    saved = (os.dup(1), os.dup(2))
    with open(path, "ab") as console:
        console.write(f"=== {_now()} pid {os.getpid()}\n".encode())
        console.flush()
        os.dup2(console.fileno(), 1)
        os.dup2(console.fileno(), 2)

    def say(line: str) -> None:
        os.write(saved[1], f"[{_now()}][HYDRA] {line}\n".encode())

    try:
        yield say
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
