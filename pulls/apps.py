from django.apps import AppConfig


class PullsConfig(AppConfig):
    name = "pulls"
    verbose_name = "PACS pulls"

    def ready(self) -> None:
        from pulls import (
            change_audit,  # noqa: F401  (audits node, grant and membership changes)
            node_changes,  # noqa: F401  (new limits apply to rows held back)
        )
