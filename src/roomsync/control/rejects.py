"""Control-plane refusals (SPEC §6): ``{"ok": false, "reject": {class, code, message,
field?, required?, next}}`` with the HTTP status of the class."""

from __future__ import annotations

from typing import Any

from ..core.codes import RejectClass
from ..core.errors import RoomsyncError


class Rejected(RoomsyncError):
    """A control command refused. ``reject_class`` fixes the HTTP status and the next
    action; ``reject_code`` names the precise reason (e.g. ``room-unknown``,
    ``query-spec-missing``); ``field`` the payload field at fault; ``required`` the cap
    that would have been enough."""

    close = None

    def __init__(
        self,
        reject_class: RejectClass,
        code: str,
        message: str,
        *,
        field: str | None = None,
        required: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message, close=None)
        self.reject_class = reject_class
        self.reject_code = code
        self.field = field
        self.required = required
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return self.reject_class.http_status

    def envelope(self) -> dict[str, Any]:
        """The response body."""
        reject: dict[str, Any] = {
            "class": str(self.reject_class),
            "code": self.reject_code,
            "message": self.message,
            "next": self.reject_class.next_action,
        }
        if self.field is not None:
            reject["field"] = self.field
        if self.required is not None:
            reject["required"] = self.required
        return {"ok": False, "reject": reject}


def not_found(what: str, ident: str, *, field: str) -> Rejected:
    return Rejected(RejectClass.NOT_FOUND, f"{what}-unknown", f"no {what} {ident!r}", field=field)
