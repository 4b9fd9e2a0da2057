"""Safety for the browser UI: a per-session CSRF token, and refusing requests meant for another host.

The lab has no login (it is a local, single-user tool), so what needs protecting is the learner's browser being
used by another web page:
- CSRF: each browser session gets a random `fl_session` cookie (HttpOnly, SameSite=Strict); its token is an
  HMAC of that session id under a secret the lab process draws at start. Pages carry the token in
  `hx-headers` (and forms in a hidden field), and every state-changing UI route (POST/DELETE) checks it. Another
  origin can neither read the token nor send the custom header without a CORS preflight we never grant.
- DNS rebinding: a page on evil.example resolving to 127.0.0.1 would be same-origin with itself, not with us; it
  still sends `Host: evil.example`, so UI routes answer only to loopback host names.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

SESSION_COOKIE = "fl_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class Refused(Exception):
    """A request the UI will not serve; `status` and `message` become the 4xx answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Session:
    id: str
    token: str
    new: bool


class Guard:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token_for(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()[:40]

    def session(self, request: Request) -> Session:
        sid = request.cookies.get(SESSION_COOKIE, "")
        if not (16 <= len(sid) <= 64 and sid.isalnum()):
            return Session(id=(sid := secrets.token_hex(16)), token=self.token_for(sid), new=True)
        return Session(id=sid, token=self.token_for(sid), new=False)

    @staticmethod
    def remember(response: Response, session: Session) -> None:
        if session.new:
            response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="strict", path="/")

    def check_host(self, request: Request) -> None:
        host = (request.headers.get("host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if name not in LOOPBACK_HOSTS:
            raise Refused(421, f"this lab only answers on 127.0.0.1 (the request was for host {host!r})")

    def check_csrf(self, request: Request, form_token: str | None = None) -> None:
        """For POST/DELETE: the session cookie's token must come back in the header (htmx) or the form."""
        origin = request.headers.get("origin")
        if origin and origin != "null":
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin.lower() != own.lower():
                raise Refused(403, f"cross-origin request refused (origin {origin})")
        sid = request.cookies.get(SESSION_COOKIE)
        sent = request.headers.get(CSRF_HEADER) or form_token
        if not sid or not sent:
            raise Refused(403, "missing CSRF token: reload the page and try again")
        if not hmac.compare_digest(sent, self.token_for(sid)):
            raise Refused(403, "wrong CSRF token (the lab restarted, or the page is stale): reload the page")
