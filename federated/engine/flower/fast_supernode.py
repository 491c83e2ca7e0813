"""``flower-supernode`` with shorter waits: the idle poll of the SuperLink and the reply wait.

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal``) sleeps 3 s after every
pull that found no message, and 0.5 s between checks for the ClientApp's reply. Between two
rounds a node is idle, so each round starts on average 1.5 s (up to 3 s) after the ServerApp
sent it, and ends up to 0.5 s after the ClientApp replied: most of the fixed cost per round
once the ClientApps are warm (issue #14). This entry point runs Flower's own ``flower-supernode``
with those two sleeps shortened (``--poll-interval``, default 0.5 s, for the SuperLink; 0.05 s
for the local reply check); everything else, arguments included, is Flower's.

    python -m federated.engine.flower.fast_supernode PATH/flower-supernode [--poll-interval S] \
        <flower-supernode args>

(The first argument names the program it stands in for: it shows in the process list, and is
Flower's ``argv[0]``.)

A shorter poll costs the SuperLink one small authenticated request per node per interval
while the node is idle: keep it at 0.5 s or more for federations of many nodes. If this
Flower has no such module-level ``time`` to shorten (another version), it warns and runs
Flower's SuperNode unchanged.
"""

from __future__ import annotations

import os
import sys
import time
import types
import warnings

__all__ = ["DEFAULT_POLL_SECONDS", "command", "main", "shorten_pull_backoff", "shorten_waits"]

DEFAULT_POLL_SECONDS = 0.5
REPLY_CHECK_SECONDS = 0.05
_IDLE_POLL = 3.0  # Flower 1.41's sleep after a pull that found no message


class _ShortSleeps(types.SimpleNamespace):
    """The ``time`` module, but ``sleep`` capped: the idle poll to ``poll``, others shorter."""

    def __init__(self, real: types.ModuleType, poll: float) -> None:
        super().__init__()
        self._real, self._poll = real, poll

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        cap = self._poll if seconds >= _IDLE_POLL else REPLY_CHECK_SECONDS
        self._real.sleep(min(seconds, cap))


def shorten_waits(poll: float = DEFAULT_POLL_SECONDS) -> bool:
    """Shorten the SuperNode loop's sleeps in this process; False if this Flower differs."""
    from flwr.supernode import start_client_internal as loop

    if getattr(loop, "time", None) is not time and not isinstance(loop.time, _ShortSleeps):
        warnings.warn(
            "flwr.supernode.start_client_internal has no module-level time: the SuperNode "
            "keeps Flower's own poll intervals",
            stacklevel=2,
        )
        return False
    loop.time = _ShortSleeps(time, poll)  # type: ignore[assignment]  # a stand-in for the module
    return True


def shorten_pull_backoff(initial: float = 0.05, cap: float = 2.0) -> bool:
    """Shorter waits when an object of a message is not there yet (this process only).

    Flower pulls a message's objects with a backoff of 1 s doubling to 10 s when one is not
    available yet. A SuperNode creates the ClientApp's task before the message's objects have
    arrived from the SuperLink, so a warm ClientApp that starts at once finds them missing and
    waits 1 + 2 = 3 s: most of a round's fixed cost on warm nodes (issue #14). Here: 0.05 s
    doubling to 2 s (Flower's limits on tries and total time are unchanged). False if this
    Flower's pull functions have no such defaults.
    """
    from flwr.supercore.inflatable import inflatable_utils

    changed = False
    for function in (
        inflatable_utils.pull_objects,
        inflatable_utils.pull_and_inflate_object_from_tree,
    ):
        defaults = function.__kwdefaults__ or {}
        if "initial_backoff" in defaults and "backoff_cap" in defaults:
            defaults.update(initial_backoff=initial, backoff_cap=cap)
            function.__kwdefaults__ = defaults
            changed = True
            continue
        names = function.__code__.co_varnames[: function.__code__.co_argcount]
        values = list(function.__defaults__ or ())
        first = len(names) - len(values)
        if "initial_backoff" in names[first:] and "backoff_cap" in names[first:]:
            values[names.index("initial_backoff") - first] = initial
            values[names.index("backoff_cap") - first] = cap
            function.__defaults__ = tuple(values)
            changed = True
    if not changed:
        warnings.warn("Flower's object pulls keep their own backoff", stacklevel=2)
    return changed


def command(program: str, poll: float | None) -> list[str]:
    """The argv that runs ``program`` (a ``flower-supernode`` path) with ``poll`` s idle polls
    (None: ``program`` itself, Flower's 3 s)."""
    if poll is None:
        return [program]
    return [sys.executable, "-m", __name__, program, "--poll-interval", f"{poll:g}"]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not args[0].endswith("flower-supernode"):
        sys.exit(
            "usage: python -m federated.engine.flower.fast_supernode PATH/flower-supernode ..."
        )
    program, args = args[0], args[1:]
    poll = DEFAULT_POLL_SECONDS
    if "--poll-interval" in args:
        at = args.index("--poll-interval")
        try:
            poll = float(args[at + 1])
        except (IndexError, ValueError):
            sys.exit("--poll-interval needs a number of seconds")
        if not 0.05 <= poll <= 3.0:
            sys.exit("--poll-interval must be between 0.05 and 3 seconds")
        del args[at : at + 2]
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read when flwr is imported
    shorten_waits(poll)
    shorten_pull_backoff()
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = [program, *args]
    flower_supernode()


if __name__ == "__main__":
    main()
