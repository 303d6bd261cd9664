from django.apps import AppConfig


class PullsConfig(AppConfig):
    name = "pulls"
    verbose_name = "PACS pulls"

    def ready(self) -> None:
        from pulls.audit import changes  # noqa: F401  (audits node, grant and membership changes)
        from pulls.limits import (
            health,  # noqa: F401  (workers write their heartbeat)
            node_changes,  # noqa: F401  (new limits apply to rows held back)
        )
