"""The whole lineage, however deep: one recursive query, cycle-safe; royalties that fit."""

from __future__ import annotations

import pytest

from core.errors import ApplicationError
from marketplace.models import Listing
from marketplace.selectors import effective_permissions, upstream_royalties, version_ancestors
from marketplace.services.licenses import license_check
from marketplace.services.listings import listing_create, listing_update
from registry.models import Lineage

pytestmark = pytest.mark.django_db


def _chain(make_version, owner, base, depth: int) -> list:  # type: ignore[no-untyped-def]
    versions = [base]
    for _ in range(depth):
        versions.append(make_version(owner, parents=(versions[-1],), publish=False))
    return versions


def test_ancestors_of_a_chain_of_60_all_found_nearest_first_in_two_queries(
    make_user, make_version, django_assert_num_queries
) -> None:
    owner = make_user("owner")
    chain = _chain(make_version, owner, make_version(owner, license_code="mit"), 60)
    # when
    with django_assert_num_queries(2):  # the recursive ids, then the rows: not one per level
        found = version_ancestors(chain[-1])
    # then
    assert [a.model_version.pk for a in found] == [v.pk for v in reversed(chain[:-1])]


def test_an_unlicensed_chain_passes_its_ancestors_limits_on(make_user, make_version) -> None:
    # given: a non-commercial base under 30 unlicensed drafts
    author, owner = make_user("author"), make_user("owner")
    base = make_version(author, license_code="cc-by-nc-4.0")
    top = _chain(make_version, owner, base, 30)[-1]
    # then: the top's effective permissions are the base's, naming it
    perms = effective_permissions(top)
    assert perms.commercial_use.value == "none"
    assert any(f"model version {base.pk}" in s for s in perms.commercial_use.sources)
    with pytest.raises(ApplicationError) as err:
        license_check(version=top, for_sale=True)
    assert err.value.details["clause"] == "commercial_use"


def test_a_cycle_in_the_table_is_walked_once(make_user, make_version) -> None:
    # given: a -> b -> c and, behind the service's back, c -> a
    owner = make_user("owner")
    a = make_version(owner, publish=False)
    b = make_version(owner, parents=(a,), publish=False)
    c = make_version(owner, parents=(b,), publish=False)
    Lineage.objects.create(child=a, parent_version=c, relation="merge")
    # then: every ancestor once, the version itself too (it lies on the cycle)
    assert [x.model_version.pk for x in version_ancestors(c)] == [b.pk, a.pk]
    assert sorted(x.model_version.pk for x in version_ancestors(a)) == sorted([b.pk, c.pk])


def _bases(make_user, make_version, *bps: int) -> list:  # type: ignore[no-untyped-def]
    out = []
    for i, royalty in enumerate(bps):
        owner = make_user(f"base{i}")
        version = make_version(owner, license_code="mit")
        listing_create(seller=owner, target=version, price=0, royalty_bps=royalty)
        out.append(version)
    return out


def test_royalties_up_to_what_the_fee_leaves_are_accepted(
    make_user, make_version, settings
) -> None:
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    seller = make_user("seller")
    derived = make_version(
        seller, license_code="mit", parents=tuple(_bases(make_user, make_version, 4500, 4500))
    )
    listing = listing_create(seller=seller, target=derived, price=10)
    assert listing.pk is not None


def test_royalties_over_what_the_fee_leaves_are_refused_with_the_numbers(
    make_user, make_version, settings
) -> None:
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    seller = make_user("seller")
    derived = make_version(
        seller, license_code="mit", parents=tuple(_bases(make_user, make_version, 4500, 4501))
    )
    # free: nothing to share, fine
    listing = listing_create(seller=seller, target=derived, price=0)
    # a price: refused, naming the total, the cap and the price
    with pytest.raises(ApplicationError) as err:
        listing_update(listing=listing, user=seller, price=1000)
    assert err.value.code == "royalties_exceed_price"
    assert "9001 bps" in err.value.message and "at most 9000 bps" in err.value.message
    assert "price of 1000" in err.value.message
    assert err.value.details["fee"] == 100
    assert len(err.value.details["ancestors"]) == 2
    listing.refresh_from_db()
    assert listing.price == 0
    assert Listing.objects.filter(model_version=derived, price=0).exists()


def test_royalties_of_a_long_lineage_in_three_queries(
    make_user, make_version, django_assert_num_queries
) -> None:
    # given: 40 ancestors, every other one listed with a 100 bps royalty
    owner = make_user("owner")
    chain = _chain(make_version, owner, make_version(owner, license_code="mit"), 40)
    for i, version in enumerate(chain[:-1]):
        if i % 2 == 0:
            listing_create(seller=owner, target=version, price=0, royalty_bps=100)
    # when
    with django_assert_num_queries(3):  # ancestor ids, lineage rows, listings
        royalties = upstream_royalties(chain[-1])
    # then: nearest first
    assert [bps for _, bps, _ in royalties] == [100] * 20
    assert f"model version {chain[-3].pk}" in royalties[0][2]
