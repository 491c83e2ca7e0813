from django.apps import AppConfig


class FederatedConfig(AppConfig):
    name = "federated"
    verbose_name = "Federated training"
