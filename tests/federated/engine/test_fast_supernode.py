"""The SuperNode's shorter waits (federated.engine.flower.fast_supernode, issue #14).

Flower 1.41's SuperNode loop sleeps 3 s after an empty pull; the wrapper shortens that sleep in
the SuperNode process only. These tests pin the Flower code it relies on (so an upgrade that
moves the sleep fails here, not silently in every round) and run the real wrapper.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

import pytest

from federated.engine.flower import fast_supernode


def test_flowers_supernode_loop_still_sleeps_3_s_through_its_module_time() -> None:
    from flwr.supernode import start_client_internal as loop

    source = inspect.getsource(loop)
    assert "time.sleep(3)" in source  # the idle poll this module shortens
    assert "time.sleep(0.5)" in source  # the reply check
    assert loop.time is time or isinstance(loop.time, fast_supernode._ShortSleeps)


def test_shortened_sleeps_cap_the_idle_poll_and_the_reply_check() -> None:
    from flwr.supernode import start_client_internal as loop

    real = loop.time
    try:
        assert fast_supernode.shorten_waits(0.1)
        started = time.monotonic()
        loop.time.sleep(3)  # the idle poll: 0.1 s now
        loop.time.sleep(0.5)  # the reply check: 0.05 s
        assert time.monotonic() - started < 1.0
        assert loop.time.time() == pytest.approx(time.time(), abs=1.0)  # the rest is time's
    finally:
        loop.time = real


def test_the_command_names_flowers_program_and_the_interval() -> None:
    assert fast_supernode.command("/x/flower-supernode", None) == ["/x/flower-supernode"]
    argv = fast_supernode.command("/x/flower-supernode", 0.5)
    assert argv[:3] == [sys.executable, "-m", "federated.engine.flower.fast_supernode"]
    assert argv[3:] == ["/x/flower-supernode", "--poll-interval", "0.5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage"),
        (["/x/other"], "usage"),
        (["/x/flower-supernode", "--poll-interval", "0"], "between 0.05 and 3"),
        (["/x/flower-supernode", "--poll-interval", "soon"], "a number of seconds"),
    ],
)
def test_bad_arguments_are_refused_clearly(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "federated.engine.flower.fast_supernode", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and message in proc.stderr


def test_flowers_own_arguments_pass_through() -> None:
    # --help is Flower's: the wrapper ran flower-supernode's parser with the remaining args
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "federated.engine.flower.fast_supernode",
            "/x/flower-supernode",
            "--poll-interval",
            "0.2",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--superlink" in proc.stdout and "--poll-interval" not in proc.stdout


def test_the_pull_backoff_starts_at_50_ms_instead_of_1_s() -> None:
    from flwr.supercore.inflatable import inflatable_utils as pulls

    functions = (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree)
    saved = [(f.__defaults__, dict(f.__kwdefaults__ or {})) for f in functions]
    try:
        # Flower's own: 1 s doubling to 10 s (what made a warm ClientApp wait 3 s)
        signature = inspect.signature(pulls.pull_and_inflate_object_from_tree)
        assert signature.parameters["initial_backoff"].default == 1
        assert fast_supernode.shorten_pull_backoff(initial=0.05, cap=2.0)
        for function in functions:
            parameters = inspect.signature(function).parameters
            assert parameters["initial_backoff"].default == 0.05
            assert parameters["backoff_cap"].default == 2.0
    finally:
        for function, (defaults, kwdefaults) in zip(functions, saved, strict=True):
            function.__defaults__ = defaults
            function.__kwdefaults__ = kwdefaults or None
