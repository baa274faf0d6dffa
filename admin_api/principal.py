"""Who is calling: the portal API key or a manager session (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from catena.errors import Forbidden

Permission = Literal["admin", "content", "subscriber"]

_FLAG_NAMES = {"admin": "isAdmin", "content": "isContentAdmin", "subscriber": "isSubscriberAdmin"}


@dataclass(frozen=True, slots=True)
class Principal:
    portal_id: int
    manager_id: int | None  # None for the API key
    email: str | None
    is_owner: bool
    is_admin: bool
    is_content_admin: bool
    is_subscriber_admin: bool

    @property
    def is_api_key(self) -> bool:
        return self.manager_id is None

    @property
    def actor(self) -> str:
        """How the operations log names this caller."""
        return self.email or "apiKey"

    @property
    def all_powerful(self) -> bool:
        """The owner and the API key may do everything; flags do not apply to them."""
        return self.is_owner or self.is_api_key

    def can(self, permission: Permission) -> bool:
        if self.all_powerful:
            return True
        return {
            "admin": self.is_admin,
            "content": self.is_content_admin,
            "subscriber": self.is_subscriber_admin,
        }[permission]

    def require(self, permission: Permission, *, reading: bool = False) -> None:
        """403 unless this caller holds ``permission``; ``reading`` words it for a read."""
        if not self.can(permission):
            what = "reading this" if reading else "this change"
            raise Forbidden(
                f"{what} needs the {_FLAG_NAMES[permission]} permission",
                code="permission_denied",
            )
