"""Private datasets listed from a node: the registry's dataset and version (manifest only),
the terms, updates by the owner only, and the privacy-budget view."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from federated.models import DatasetTerms, PrivacySpend
from federated.selectors import dataset_budget, datasets_of_owner, federated_datasets_available
from federated.services.datasets import (
    dataset_terms_update,
    federated_dataset_create,
    terms_clean,
)
from federated.services.jobs import job_fail
from registry.models import DatasetKind, Visibility
from tests.federated.factories import manifest

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


def test_listing_creates_a_private_registry_dataset_with_the_manifest_and_terms(fed: Any) -> None:
    # Given an owner with a node
    owner = fed.user("owner1")
    node = fed.node(owner).node
    # When they list a dataset from it
    terms = federated_dataset_create(
        owner=owner,
        node_id=node.pk,
        name="Holiday photos",
        manifest=manifest(count=12, seed=7),
        terms={
            "price_per_example_round": 2,
            "epsilon_per_job": 4.0,
            "allowed_uses": ["style"],
            "approval": "manual",
        },
    )
    # Then the registry holds a private dataset whose version is the manifest only
    version = terms.dataset_version
    assert version.dataset.kind == DatasetKind.PRIVATE
    assert version.dataset.owner == owner
    assert (version.image_count, version.manifest_hash) == (12, f"{7:064x}")
    assert version.blob is None
    # And the terms, with defaults for what was not given
    assert (terms.node, terms.price_per_example_round, terms.pricing) == (node, 2, "example_round")
    assert terms.epsilon_lifetime == 16.0  # 4 jobs at the per-job budget
    assert (terms.delta, terms.require_dp, terms.commercial_use) == (1e-5, True, False)
    assert terms.allowed_families == ["sd1", "sd2"]
    assert (terms.allowed_uses, terms.approval) == (["style"], "manual")


def test_no_uses_named_means_every_use() -> None:
    # ``atelier node publish`` without --uses sends an empty list
    cleaned = terms_clean({"epsilon_per_job": 1.0, "allowed_uses": []})
    assert cleaned["allowed_uses"] == ["research", "style", "subject", "concept"]


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        ({"price_per_example_round": -1}, "bad_price_per_example_round"),
        ({"price_per_example_round": 1.5}, "bad_price_per_example_round"),
        ({"price_per_example_round": 1, "price_per_job": 100}, "bad_pricing"),
        ({"epsilon_per_job": 0}, "bad_epsilon_per_job"),
        ({"epsilon_per_job": float("nan")}, "bad_epsilon_per_job"),
        ({"epsilon_per_job": 5, "epsilon_lifetime": 2}, "bad_epsilon_lifetime"),
        ({"delta": 0.5}, "bad_delta"),
        ({"allowed_families": ["sd9"]}, "bad_allowed_families"),
        ({"allowed_uses": ["spam"]}, "bad_allowed_uses"),
        ({"allowed_families": []}, "bad_allowed_families"),
        ({"approval": "maybe"}, "bad_approval"),
        ({"commercial_use": "yes"}, "bad_commercial_use"),
        ({"colour": "red"}, "bad_terms"),
    ],
)
def test_bad_terms_are_refused(terms: dict[str, Any], code: str) -> None:
    with pytest.raises(ApplicationError) as err:
        terms_clean({"epsilon_per_job": 8.0, **terms})
    assert err.value.code == code
    assert err.value.status_code == 400


def test_a_listing_with_bad_terms_creates_nothing(fed: Any) -> None:
    owner = fed.user("owner1")
    node = fed.node(owner).node
    with pytest.raises(ApplicationError) as err:
        federated_dataset_create(
            owner=owner,
            node_id=node.pk,
            name="x",
            manifest=manifest(count=3, seed=1),
            terms={"epsilon_per_job": 8.0, "delta": 0.5},
        )
    assert err.value.code == "bad_delta"
    assert DatasetTerms.objects.count() == 0
    assert not owner.datasets.exists()


def test_a_bad_manifest_is_refused_by_the_registry(fed: Any) -> None:
    owner = fed.user("owner1")
    node = fed.node(owner).node
    with pytest.raises(ApplicationError) as err:
        federated_dataset_create(
            owner=owner,
            node_id=node.pk,
            name="x",
            manifest={"count": 0, "manifest_hash": "zz"},
            terms={"epsilon_per_job": 8.0},
        )
    assert err.value.code == "bad_manifest"
    assert not owner.datasets.exists()


def test_only_the_owners_active_node_can_list(fed: Any) -> None:
    owner, other = fed.user("owner1"), fed.user("owner2")
    registered = fed.node(owner)
    with pytest.raises(NotFoundError):
        federated_dataset_create(
            owner=other,
            node_id=registered.node.pk,
            name="x",
            manifest=manifest(count=3, seed=1),
            terms={"epsilon_per_job": 1},
        )
    from federated.services.nodes import node_revoke

    node_revoke(node=registered.node, user=owner)
    with pytest.raises(ApplicationError) as err:
        federated_dataset_create(
            owner=owner,
            node_id=registered.node.pk,
            name="x",
            manifest=manifest(count=3, seed=1),
            terms={"epsilon_per_job": 1},
        )
    assert err.value.code == "node_revoked"


def test_the_same_manifest_is_listed_once_and_a_new_version_goes_to_the_same_dataset(
    fed: Any,
) -> None:
    owner = fed.user("owner1")
    first = fed.dataset(owner, seed=5)
    with pytest.raises(ConflictError) as err:
        fed.dataset(owner, node=first.node, seed=5)
    assert err.value.details == {"dataset_version_id": first.dataset_version_id}
    second = federated_dataset_create(
        owner=owner,
        node_id=first.node_id,
        name="ignored",
        manifest=manifest(count=4, seed=6),
        terms={"epsilon_per_job": 2.0},
        dataset_id=first.dataset_version.dataset_id,
    )
    assert second.dataset_version.dataset_id == first.dataset_version.dataset_id
    assert second.dataset_version.name == "v2"


def test_terms_change_by_the_owner_only(fed: Any) -> None:
    owner, other = fed.user("owner1"), fed.user("owner2")
    terms = fed.dataset(owner)
    staff = fed.user("admin")
    staff.is_staff = True
    staff.save()
    for intruder in (other, staff):
        with pytest.raises(AccessDeniedError):
            dataset_terms_update(terms=terms, user=intruder, changes={"price_per_example_round": 0})
    updated = dataset_terms_update(
        terms=terms,
        user=owner,
        changes={"price_per_example_round": 0, "price_per_job": 50, "commercial_use": True},
    )
    assert (updated.pricing, updated.price_per_job, updated.commercial_use) == ("job", 50, True)
    # A change that breaks a rule leaves the terms as they were
    with pytest.raises(ApplicationError):
        dataset_terms_update(terms=terms, user=owner, changes={"epsilon_lifetime": 1.0})
    terms.refresh_from_db()
    assert terms.epsilon_lifetime == 20.0


def test_available_datasets_hide_private_ones_and_revoked_nodes(fed: Any) -> None:
    owner, trainer = fed.user("owner1"), fed.user("trainer")
    listed = fed.dataset(owner)
    hidden = fed.dataset(owner)
    hidden.dataset_version.dataset.visibility = Visibility.PRIVATE
    hidden.dataset_version.dataset.save()
    revoked = fed.dataset(owner)
    from federated.services.nodes import node_revoke

    node_revoke(node=revoked.node, user=owner)
    seen = {t.pk for t in federated_datasets_available(user=trainer)}
    assert seen == {listed.pk}
    assert {t.pk for t in federated_datasets_available(user=owner)} == {listed.pk, hidden.pk}


def test_budget_shows_spent_per_job_reserved_by_active_jobs_and_remaining(fed: Any) -> None:
    # Given a dataset with a lifetime budget of 20 and two DP jobs on it
    owner = fed.user("owner1")
    trainer = fed.user("trainer", credits=10_000)
    terms = fed.dataset(owner, epsilon_per_job=8.0, epsilon_lifetime=20.0)
    base = fed.base_version(fed.user("creator"))
    done, _ = fed.running(trainer, fed.spec(base, [terms], target_epsilon=6.0))
    PrivacySpend.objects.create(job=done, dataset_version=terms.dataset_version, epsilon=5.5)
    job_fail(job=done, reason="test")
    active = fed.launch(trainer, fed.spec(base, [terms], target_epsilon=4.0))
    PrivacySpend.objects.create(job=active, dataset_version=terms.dataset_version, epsilon=1.0)
    # When the owner looks at the budget
    budget = dataset_budget(terms=terms)
    # Then spent sums the reported epsilon, the active job reserves the rest of its target
    assert budget.spent == pytest.approx(6.5)
    assert budget.reserved == pytest.approx(3.0)
    assert budget.remaining == pytest.approx(10.5)
    assert {(j.job_id, j.epsilon, j.reserved) for j in budget.jobs} == {
        (done.pk, 5.5, 0.0),
        (active.pk, 1.0, 3.0),
    }
    row = datasets_of_owner(owner=owner)[0]
    assert row.budget.remaining == pytest.approx(10.5)
