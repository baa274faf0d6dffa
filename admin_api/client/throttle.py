"""The client API's sign-in limits: codes per address and per phone, wrong codes per address.

They are slots of the application's :class:`admin_api.limiter.Limiter`: an attempt
is counted before it is made, so parallel requests cannot outrun a limit, and
while Redis is unreachable the counts are kept per process.  What stops guessing a
code (attempts per code, expiry, the cooldown between codes) is enforced in
PostgreSQL and holds whatever happens to Redis.

- Every code request counts against its client address (``CATENA_CLIENT_SMS_PER_IP``),
  refused ones included: an address that keeps asking is the one that is stopped.
- Codes actually sent count against the phone *from that address*
  (``CATENA_CLIENT_SMS_PER_PHONE``): a request the cooldown refuses gives its slot
  back, and another address (the subscriber's own) has its own count, so nobody
  can lock a subscriber out by asking for their codes.
- Every checked code counts against the address (``CATENA_CLIENT_VERIFY_FAIL_PER_IP``);
  a correct one gives its slot back.
"""

from __future__ import annotations

from catena.settings import AdminSettings

from ..limiter import Limiter, Slot


class Throttles:
    """The slots of one client address."""

    def __init__(self, limiter: Limiter, settings: AdminSettings, address: str) -> None:
        self.limiter = limiter
        self.settings = settings
        self.address = address

    def _slot(self, limit: int, message: str, *parts: object) -> Slot:
        return self.limiter.slot(limit, self.settings.client_sms_window, message, "client", *parts)

    def code_requests(self) -> Slot:
        message = "too many codes requested from this address; try again later"
        return self._slot(self.settings.client_sms_per_ip, message, "sms-ip", self.address)

    def codes_for(self, portal_id: int, phone: str) -> Slot:
        message = "too many codes requested for this phone; try again later"
        limit = self.settings.client_sms_per_phone
        return self._slot(limit, message, "sms-phone", f"{portal_id}:{phone}", self.address)

    def code_checks(self) -> Slot:
        message = "too many wrong codes from this address; try again later"
        return self._slot(self.settings.client_verify_fail_per_ip, message, "verify-ip", self.address)
