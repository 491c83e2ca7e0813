from django.apps import AppConfig


class FederatedConfig(AppConfig):
    name = "federated"
    verbose_name = "Federated training"

    def ready(self) -> None:
        from federated import checks  # noqa: F401  (registers the system checks)
