"""The errors a user can fix, and the one place that turns them into a message.

Library code raises a subclass of `HfMedaiError` for every expected failure (bad config, bad data, a run folder
that exists, a refused push, a setup this machine cannot run) and never calls `sys.exit`: a caller such as a test
or a notebook gets an exception it can catch. The recipes' and the CLI's entry points call `run_main`, which prints
such an error as one line on stderr and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable


class HfMedaiError(Exception):
    """An expected failure with a message that says what to change. Exit status 1 unless a subclass says 2."""

    exit_code = 1


class ConfigError(HfMedaiError, ValueError):
    """A bad option, flag or config file (exit status 2, as argparse uses for usage errors)."""

    exit_code = 2


class SetupError(HfMedaiError, RuntimeError):
    """A valid config this machine or launch cannot run (no GPU for bf16, a missing optional package...)."""


def error_message(error: BaseException, prog: str) -> str:
    rank = os.environ.get("RANK")
    world = os.environ.get("WORLD_SIZE", "1")
    where = f" [process {rank} of {world}]" if rank is not None and world != "1" else ""
    return f"{prog}: error{where}: {error}"


def run_main(main: Callable[[], object], prog: str | None = None) -> None:
    """Run an entry point: an `HfMedaiError` becomes one line on stderr and its exit status; no traceback.

    Under `accelerate launch` the launcher prints its own traceback after a failed child unless it is given `-q`
    (`accelerate launch -q recipes/...`); the recipe's own output is still the one line.
    """
    prog = prog or os.path.basename(sys.argv[0]) or "hf-medai"
    try:
        main()
    except HfMedaiError as error:
        sys.stdout.flush()
        if int(os.environ.get("RANK", "0")) != 0:
            # Most such errors (a bad flag, a missing file) hit every process at once; the launcher stops the others
            # as soon as process 0 exits, so the message is printed once. An error of this process alone still is.
            time.sleep(3)
        print(error_message(error, prog), file=sys.stderr, flush=True)
        # os._exit: no atexit handlers, so no second report from torch.distributed or a progress bar on the way out.
        os._exit(error.exit_code)
