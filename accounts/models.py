from django.contrib.auth.models import AbstractUser

# Operators manage PACS nodes, limits and users and see the whole audit log.
OPERATORS_GROUP = "operators"


class User(AbstractUser):
    """The portal's user; custom from the first migration so it can grow."""

    class Meta:
        db_table = "accounts_user"

    @property
    def is_operator(self) -> bool:
        if self.is_superuser:
            return True
        if not self.is_staff:
            return False
        return self.groups.filter(name=OPERATORS_GROUP).exists()
