"""Which models are listed follows their versions' publication, without joining versions."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from registry.selectors.models import listed_models
from registry.services.catalog import version_publish, version_unpublish
from tests.registry.factories import complete_upload, make_model, make_version

pytestmark = pytest.mark.django_db


def test_a_model_is_listed_once_a_version_is_published_and_unlisted_when_none_is(
    make_user,
) -> None:
    # Given a model whose only version is a draft
    alice = make_user("alice")
    draft = make_model(owner=alice, name="Draft first", publish=False)
    assert not listed_models().filter(pk=draft.model_id).exists()

    # When it is published, then it is listed
    version_publish(version=draft, user=alice)
    assert listed_models().filter(pk=draft.model_id).exists()

    # When it is unpublished again, then it is not
    version_unpublish(version=draft, user=alice)
    assert not listed_models().filter(pk=draft.model_id).exists()


def test_unpublishing_one_of_two_versions_keeps_the_model_listed_at_the_other(make_user) -> None:
    # Given a model with two published versions
    alice = make_user("alice")
    first = make_model(owner=alice, name="Two versions")
    second = make_version(model=first.model, name="v2", upload=complete_upload(user=alice))

    # When the newer one is unpublished
    version_unpublish(version=second, user=alice)

    # Then the model stays listed, dated by the version still published
    first.model.refresh_from_db()
    first.refresh_from_db()
    assert first.model.latest_published_at == first.published_at


def test_counting_listed_models_does_not_touch_the_versions_table(make_user) -> None:
    # Given a listed model
    make_model(owner=make_user("alice"), name="Counted")

    # When the listing is counted
    with CaptureQueriesContext(connection) as queries:
        count = listed_models().count()

    # Then one query ran, and it did not read versions
    assert count == 1
    assert len(queries) == 1
    assert "registry_modelversion" not in queries[0]["sql"]
