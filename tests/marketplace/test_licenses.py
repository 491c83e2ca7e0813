"""License catalogue and the lineage rules checked when publishing or listing for sale."""

from __future__ import annotations

import pytest

from core.errors import ApplicationError
from marketplace.models import License
from marketplace.selectors import effective_permissions
from marketplace.services.licenses import LicenseConflictError
from marketplace.services.listings import listing_create
from registry.services.catalog import version_publish

pytestmark = pytest.mark.django_db


def test_catalogue_has_the_stable_ids() -> None:
    assert set(License.objects.values_list("code", flat=True)) == {
        "creativeml-openrail-m",
        "creativeml-openrail-pp-m",
        "cc-by-4.0",
        "cc-by-nc-4.0",
        "cc-by-sa-4.0",
        "apache-2.0",
        "mit",
        "custom",
    }


def test_derivative_of_a_no_derivatives_ancestor_cannot_be_published(
    make_user, make_version
) -> None:
    owner, other = make_user("o"), make_user("p")
    base = make_version(owner, license_code="custom")
    child = make_version(other, license_code="custom", parents=(base,), publish=False)
    with pytest.raises(LicenseConflictError) as err:
        version_publish(version=child, user=other)
    assert err.value.details == {
        "ancestor": f"model version {base.pk} ({base})",
        "clause": "derivatives_allowed",
    }
    assert str(base.pk) in err.value.message


def test_relicensing_a_share_alike_ancestor_is_refused(make_user, make_version) -> None:
    owner = make_user("o")
    base = make_version(owner, license_code="cc-by-sa-4.0")
    child = make_version(owner, license_code="mit", parents=(base,), publish=False)
    with pytest.raises(LicenseConflictError) as err:
        version_publish(version=child, user=owner)
    assert err.value.details["clause"] == "different_license_allowed"


def test_same_license_as_a_share_alike_ancestor_publishes(make_user, make_version) -> None:
    owner = make_user("o")
    base = make_version(owner, license_code="cc-by-sa-4.0")
    child = make_version(owner, license_code="cc-by-sa-4.0", parents=(base,))
    assert child.is_published


def test_selling_a_derivative_of_a_non_commercial_ancestor_is_refused(
    make_user, make_version
) -> None:
    owner = make_user("o")
    base = make_version(owner, license_code="cc-by-nc-4.0")
    child = make_version(owner, license_code="cc-by-nc-4.0", parents=(base,))
    with pytest.raises(LicenseConflictError) as err:
        listing_create(seller=owner, target=child, price=10)
    assert err.value.details["clause"] == "commercial_use"
    assert "cc-by-nc-4.0" in err.value.message


def test_free_listing_of_a_non_commercial_derivative_is_fine(make_user, make_version) -> None:
    owner = make_user("o")
    base = make_version(owner, license_code="cc-by-nc-4.0")
    child = make_version(owner, license_code="cc-by-nc-4.0", parents=(base,))
    assert listing_create(seller=owner, target=child, price=0).price == 0


def test_grandparent_restrictions_apply_too(make_user, make_version) -> None:
    owner = make_user("o")
    root = make_version(owner, license_code="cc-by-nc-4.0")
    mid = make_version(owner, license_code="cc-by-nc-4.0", parents=(root,))
    leaf = make_version(owner, license_code="cc-by-nc-4.0", parents=(mid,))
    with pytest.raises(LicenseConflictError) as err:
        listing_create(seller=owner, target=leaf, price=10)
    assert err.value.details["ancestor"].startswith(f"model version {mid.pk}")


def test_unknown_license_code_is_refused_at_publish(make_user, make_version) -> None:
    owner = make_user("o")
    version = make_version(owner, license_code="wtfpl", publish=False)
    with pytest.raises(ApplicationError) as err:
        version_publish(version=version, user=owner)
    assert err.value.code == "unknown_license"


def test_effective_permissions_name_their_sources(make_user, make_version) -> None:
    owner = make_user("o")
    base = make_version(owner, license_code="cc-by-nc-4.0")
    child = make_version(owner, license_code="cc-by-nc-4.0", parents=(base,))
    perms = effective_permissions(child)
    assert perms.commercial_use.value == "none"
    assert perms.credit_required.value is True
    assert any(f"model version {base.pk}" in s for s in perms.commercial_use.sources)
    assert perms.derivatives_allowed.value is True


def test_license_catalogue_migration_is_reversible() -> None:
    import importlib

    from django.apps import apps as global_apps
    from django.db import connection

    module = importlib.import_module("marketplace.migrations.0003_license_catalogue")
    with connection.schema_editor() as editor:
        module.unload(global_apps, editor)
        assert License.objects.count() == 0
        module.load(global_apps, editor)
    assert License.objects.count() == 8
