"""Marketplace fixtures: users with funded wallets, published versions with real files."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from marketplace.payments import DemoProvider


def safetensors_bytes(seed: int = 0) -> bytes:
    """A small valid safetensors file (one float32 tensor); ``seed`` varies the content."""
    data = struct.pack("<4f", float(seed), 1.0, 2.0, 3.0)
    header = {
        "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(data)]},
        "__metadata__": {"format": "pt"},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


_counter = {"n": 0}


@pytest.fixture
def make_version(db) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """A published model version with one file, owned by ``owner``."""
    from registry.services.catalog import (
        FileSpec,
        ParentSpec,
        model_create,
        version_create,
        version_publish,
    )
    from registry.services.uploads import upload_whole_file

    uploads: dict[int, Any] = {}

    def make(
        owner: Any,
        *,
        license_code: str = "",
        parents: tuple[Any, ...] = (),
        publish: bool = True,
        kind: str = "checkpoint",
    ) -> Any:
        _counter["n"] += 1
        n = _counter["n"]
        upload = uploads.get(owner.pk)
        if upload is None:  # one completed upload per owner, attached to each of its versions
            content = safetensors_bytes(owner.pk)
            upload = upload_whole_file(
                user=owner,
                filename=f"m{owner.pk}.safetensors",
                stream=io.BytesIO(content),
                size=len(content),
            )
            uploads[owner.pk] = upload
        model = model_create(owner=owner, name=f"model {n}", kind=kind)
        version = version_create(
            model=model,
            user=owner,
            name="v1",
            files=[FileSpec(upload)],
            license_code=license_code,
            parents=[
                ParentSpec("finetune", version=p)
                if hasattr(p, "model_id")
                else ParentSpec("trained_on", dataset_version=p)
                for p in parents
            ],
        )
        if publish:
            version = version_publish(version=version, user=owner)
        return version

    return make


@pytest.fixture
def seller(make_user: Callable[..., Any]) -> Any:
    return make_user("seller")


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Any:
    """A staff member (moderation, payouts)."""
    return make_user("staff", is_staff=True, is_superuser=True)


@pytest.fixture
def buyer_funds() -> int:
    """What ``buyer`` holds at the start; a module whose amounts count from another sum
    overrides this."""
    return 1000


@pytest.fixture
def buyer(make_user: Callable[..., Any], fund: Callable[[Any, int], None], buyer_funds: int) -> Any:
    user = make_user("buyer")
    fund(user, buyer_funds)
    return user


@pytest.fixture
def version(seller: Any, make_version: Callable[..., Any]) -> Any:
    """A published version of ``seller``'s."""
    return make_version(seller)


@pytest.fixture
def listing(seller: Any, version: Any) -> Any:
    """``version`` listed at 100 credits."""
    from marketplace.services.listings import listing_create

    return listing_create(seller=seller, target=version, price=100)


@pytest.fixture
def fund() -> Callable[[Any, int], None]:
    from marketplace.services.ledger import wallet_top_up

    def give(user: Any, amount: int) -> None:
        _counter["n"] += 1
        wallet_top_up(
            user=user,
            amount=amount,
            provider=DemoProvider(),
            idempotency_key=f"fund-{_counter['n']}",
        )

    return give


@pytest.fixture
def earn(fund: Callable[[Any, int], None]) -> Callable[[Any, int], None]:
    """``earn(user, amount)``: ``user`` earns ``amount`` withdrawable credits, paid from a
    patron's escrow as a federated job pays a data owner (fee 0)."""
    from django.contrib.auth import get_user_model

    from marketplace.services.ledger import escrow_hold_create, escrow_settle

    def give(user: Any, amount: int) -> None:
        _counter["n"] += 1
        n = _counter["n"]
        patron = get_user_model().objects.create_user(username=f"patron-{n}")
        fund(patron, amount)
        hold = escrow_hold_create(payer=patron, amount=amount, reference=f"earn-{n}")
        escrow_settle(escrow_hold=hold, payouts=[(user, amount)], fee=0)

    return give


@pytest.fixture
def ledger_is_balanced(db) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    """Call at the end of a scenario: the ledger sums to zero and every balance reconciles."""
    from marketplace.selectors import ledger_reconcile, ledger_total, unbalanced_transactions

    def check() -> None:
        assert ledger_total() == 0
        assert unbalanced_transactions() == []
        assert ledger_reconcile() == []

    return check


@pytest.fixture
def allow_unbalanced_ledger() -> None:
    """Request it in a test that corrupts the ledger on purpose (skips the check below)."""


@pytest.fixture(autouse=True)
def _ledger_balanced_after_every_test(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """After every database test: the ledger sums to zero and every balance reconciles."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(
        request.fixturenames
    )
    if not uses_db or "allow_unbalanced_ledger" in request.fixturenames:
        yield
        return
    check = request.getfixturevalue("ledger_is_balanced")
    yield
    check()


@pytest.fixture
def on_day() -> Callable[..., Any]:
    """``with on_day(date):`` rows created inside get that day (noon, local time)."""
    import contextlib
    import datetime
    from unittest import mock

    from django.utils import timezone

    @contextlib.contextmanager
    def at(day: datetime.date) -> Iterator[None]:
        moment = timezone.make_aware(datetime.datetime.combine(day, datetime.time(12)))
        with mock.patch("django.utils.timezone.now", return_value=moment):
            yield

    return at
