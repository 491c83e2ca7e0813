"""The marketplace's fixtures (funded wallets, published versions) for the site-wide pages."""

from tests.marketplace.conftest import fund, make_version  # noqa: F401  (fixtures)
