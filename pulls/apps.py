from django.apps import AppConfig


class PullsConfig(AppConfig):
    name = "pulls"
    verbose_name = "PACS pulls"

    def ready(self) -> None:
        from pulls import (
            change_audit,  # noqa: F401  (audits node, grant and membership changes)
            health,  # noqa: F401  (workers write their heartbeat)
            node_changes,  # noqa: F401  (new limits apply to rows held back)
        )
