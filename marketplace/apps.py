from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from marketplace import checks  # noqa: F401  (registers the system checks)
        from marketplace.access import download_policy
        from marketplace.selectors import models_with_price
        from marketplace.services.licenses import publish_check
        from marketplace.upload_terms import UPLOAD_TERMS
        from registry.access import set_download_policy
        from registry.forms import set_upload_terms
        from registry.selectors.models import set_price_annotator
        from registry.services.catalog import register_publish_check

        set_download_policy(download_policy)
        register_publish_check(publish_check)
        set_price_annotator(models_with_price)
        set_upload_terms(UPLOAD_TERMS)
