from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from core.redaction import install_token_redaction

        install_token_redaction()
