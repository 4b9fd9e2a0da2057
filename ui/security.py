"""Safety for the browser UI: a per-session CSRF token on every state-changing UI route.

The lab has no login (it is a local, single-user tool), so what needs protecting is the learner's browser being
used by another web page. The Host (DNS rebinding), Origin and Sec-Fetch-Site checks are lab/apiguard.py's, in
front of every route of the lab server, the UI's included; this module adds what only forms need:
- CSRF: each browser session gets a random `fl_session` cookie (HttpOnly, SameSite=Strict); its token is an
  HMAC of that session id under a secret the lab process draws at start. Pages carry the token in
  `hx-headers` (and forms in a hidden field), and every state-changing UI route (POST/DELETE) checks it. Another
  origin can neither read the token nor send the custom header without a CORS preflight we never grant.
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

    def check_csrf(self, request: Request, form_token: str | None = None) -> None:
        """For POST/DELETE: the session cookie's token must come back in the header (htmx) or the form. (A foreign
        Origin never gets this far: lab/apiguard.py refused it.)"""
        sid = request.cookies.get(SESSION_COOKIE)
        sent = request.headers.get(CSRF_HEADER) or form_token
        if not sid or not sent:
            raise Refused(403, "missing CSRF token: reload the page and try again")
        if not hmac.compare_digest(sent, self.token_for(sid)):
            raise Refused(403, "wrong CSRF token (the lab restarted, or the page is stale): reload the page")
