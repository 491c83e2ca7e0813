from django.apps import AppConfig


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Studio (image generation)"

    def ready(self) -> None:
        # The registry renders a version's sample images when it is published, through the
        # studio's generation path (its hook: registry.services.samples).
        from registry.services.samples import sample_renderer_register
        from studio.services.samples import RENDERER

        sample_renderer_register(renderer=RENDERER)
