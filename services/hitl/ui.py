"""The director inbox: a small server-rendered page (Jinja2) on top of the same use cases as the REST API.

Login goes through the accounts service (`POST /auth/login` with password and TOTP code, relaying the director's
address, accounts_relay.py); the access token is kept in an HttpOnly, SameSite=Strict, Secure cookie with the
`__Host-` prefix (Secure whatever scheme a proxy reports; path `/`, no domain, so no sibling host or path can set
it). Every form carries a CSRF token that must match the `__Host-hitl_csrf` cookie (double submit); a login
issues a new one. The routes are left out of the OpenAPI document: they take a cookie, not a bearer token.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.hitl.accounts_relay import AccountsRelay, RelayUnavailable
from services.hitl.adapters import HitlAdapters, hitl_adapters
from services.hitl.api import visible_accounts
from services.hitl.config import HitlSettings
from services.hitl.errors import HitlError
from services.hitl.repository import RequestFilter
from services.hitl.service import Vote, ensure_fresh_otp
from shared.auth.tokens import InvalidToken, Principal, RevocationUnavailable, TokenVerifier
from shared.observability.logging import get_logger
from shared.web import DUTIES

log = get_logger(__name__)

SESSION_COOKIE = "__Host-hitl_session"
CSRF_COOKIE = "__Host-hitl_csrf"
COOKIE_PATH = "/"  # the __Host- prefix demands path "/" and Secure
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))

router = APIRouter(include_in_schema=False)


def _adapters(request: Request) -> HitlAdapters:
    return hitl_adapters(request.app.state.runtime)


def _settings(request: Request) -> HitlSettings:
    return _adapters(request).settings


def _relay(request: Request) -> AccountsRelay:
    relay: AccountsRelay | None = getattr(request.app.state, "accounts_relay", None)
    if relay is None:
        relay = AccountsRelay(_settings(request))
        request.app.state.accounts_relay = relay
    return relay


async def _relay_headers(request: Request, client: httpx.AsyncClient) -> dict[str, str]:
    address = request.client.host if request.client else "unknown"
    return await _relay(request).headers(client, address)


def _csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def _set_csrf(response: Response, csrf: str) -> None:
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, secure=True, samesite="strict", path=COOKIE_PATH)


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    csrf = _csrf_token(request)
    response = TEMPLATES.TemplateResponse(request, name, {**context, "csrf": csrf}, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'"
    _set_csrf(response, csrf)
    return response


def _csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return cookie is not None and bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


def _store_token(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        secure=True,
        samesite="strict",
        path=COOKIE_PATH,
    )


async def _principal(request: Request) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await _verified(request, token)


async def _verified(request: Request, token: str) -> Principal | None:
    """The token's principal, or None when it is invalid, revoked or cannot be checked right now."""
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(token)
    except (InvalidToken, RevocationUnavailable):
        return None


def _to_login(message: str | None = None) -> RedirectResponse:
    target = "/hitl/ui/login" + (f"?msg={quote(message)}" if message else "")
    return RedirectResponse(target, status_code=303)


@router.get("/hitl/ui/login", response_class=HTMLResponse)
async def login_page(request: Request, msg: str | None = None) -> HTMLResponse:
    """The login form: username, password and TOTP code."""
    return _render(request, "login.html", {"message": msg})


@router.post("/hitl/ui/login", response_model=None)
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=500)],
    totp_code: Annotated[str, Form(max_length=10)],
    csrf: Annotated[str, Form(max_length=200)],
) -> Response:
    """Log in at the accounts service; the access token goes into the HttpOnly session cookie."""
    if not _csrf_ok(request, csrf):
        return _render(request, "login.html", {"message": "The form expired: please try again."}, 403)
    settings = _settings(request)
    body = {"username": username, "password": password, "totp_code": totp_code}
    try:
        async with httpx.AsyncClient(base_url=settings.accounts_url, timeout=settings.login_timeout_s) as client:
            answer = await client.post("/auth/login", json=body, headers=await _relay_headers(request, client))
    except (httpx.HTTPError, RelayUnavailable) as exc:
        log.error("accounts_unreachable", error_type=type(exc).__name__)
        return _render(request, "login.html", {"message": "The accounts service is unavailable."}, 503)
    if answer.status_code == 429:
        return _render(request, "login.html", {"message": "Too many failed attempts: try again later."}, 429)
    if answer.status_code != 200:
        return _render(request, "login.html", {"message": "Invalid username, password or code."}, 401)
    tokens = answer.json()
    response = RedirectResponse("/hitl/ui", status_code=303)
    _store_token(request, response, str(tokens["access_token"]), int(tokens.get("expires_in", 900)))
    _set_csrf(response, secrets.token_urlsafe(32))  # a token planted before login is worthless after it
    return response


@router.post("/hitl/ui/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)]) -> RedirectResponse:
    """Revoke the access token at the accounts service and forget the session cookie."""
    if not _csrf_ok(request, csrf):
        return _to_login("The form expired: please try again.")
    token = request.cookies.get(SESSION_COOKIE)
    message = "Logged out."
    if token:
        settings = _settings(request)
        try:
            async with httpx.AsyncClient(base_url=settings.accounts_url, timeout=settings.login_timeout_s) as client:
                answer = await client.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
            revoked = answer.status_code in (204, 401)
        except httpx.HTTPError as exc:
            log.error("accounts_unreachable", error_type=type(exc).__name__)
            revoked = False
        if not revoked:
            message = "Logged out here, but the accounts service could not revoke the token (it expires on its own)."
    response = _to_login(message)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response


@router.get("/hitl/ui", response_class=HTMLResponse, response_model=None)
async def inbox(request: Request, msg: str | None = None) -> Response:
    """Pending requests (with the order details and requester) and the history of decisions."""
    principal = await _principal(request)
    if principal is None:
        return _to_login()
    director = _as_director(principal)
    if director is None:
        return _render(request, "login.html", {"message": "This page is for directors."}, 403)
    principal = director
    hitl = _adapters(request)
    accounts = visible_accounts(principal)
    pending = await hitl.requests.search(RequestFilter(status="pending", accounts=accounts, limit=200))
    history = await hitl.requests.search(RequestFilter(status="decided", accounts=accounts, limit=50))
    context = {"principal": principal, "pending": pending, "history": history, "message": msg}
    return _render(request, "inbox.html", context)


def _as_director(principal: Principal) -> Principal | None:
    # The same duty as the API's vote routes: the director role AND approvals:write, with the director's grants only.
    roles, scope = DUTIES["Director"]
    if not principal.has_any_role(*roles) or scope not in principal.scopes:
        return None
    return principal.acting_as(roles)


async def _step_up(request: Request, principal_token: str, totp_code: str) -> tuple[str, int] | None:
    settings = _settings(request)
    try:
        async with httpx.AsyncClient(base_url=settings.accounts_url, timeout=settings.login_timeout_s) as client:
            headers = {"Authorization": f"Bearer {principal_token}", **await _relay_headers(request, client)}
            answer = await client.post("/auth/step-up", json={"totp_code": totp_code}, headers=headers)
    except (httpx.HTTPError, RelayUnavailable):
        return None
    if answer.status_code != 200:
        return None
    tokens = answer.json()
    return str(tokens["access_token"]), int(tokens.get("expires_in", 900))


async def _vote(request: Request, request_id: str, vote: Vote, csrf: str, totp_code: str | None) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_login("Please log in again.")
    if not _csrf_ok(request, csrf):
        return RedirectResponse("/hitl/ui?msg=" + quote("The form expired: please try again."), status_code=303)
    hitl = _adapters(request)
    fresh_token: tuple[str, int] | None = None
    if totp_code:
        fresh_token = await _step_up(request, request.cookies.get(SESSION_COOKIE, ""), totp_code)
        if fresh_token is None:
            return RedirectResponse("/hitl/ui?msg=" + quote("The TOTP code was not accepted."), status_code=303)
        principal = await _verified(request, fresh_token[0])
        if principal is None:
            return RedirectResponse("/hitl/ui?msg=" + quote("The new token could not be checked."), status_code=303)
    try:
        director = _as_director(principal)
        if director is None:
            return RedirectResponse("/hitl/ui?msg=" + quote("Only directors can vote."), status_code=303)
        ensure_fresh_otp(director, hitl.context.clock(), hitl.settings.otp_max_age_s)
        view = await hitl.vote(request_id, director, vote)
        message = f"Request {request_id}: your vote is recorded, the request is {view.request.status}."
    except HitlError as exc:
        message = f"Request {request_id}: {exc.code}: {exc.message}"
    response = RedirectResponse("/hitl/ui?msg=" + quote(message), status_code=303)
    if fresh_token is not None:
        _store_token(request, response, *fresh_token)
    return response


@router.post("/hitl/ui/requests/{request_id}/approve")
async def approve_form(
    request: Request,
    request_id: str,
    payload_hash: Annotated[str, Form(pattern=r"^[0-9a-f]{64}$")],
    csrf: Annotated[str, Form(max_length=200)],
    reason: Annotated[str, Form(max_length=500)] = "",
    totp_code: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Approve from the page (the hash of the payload the page showed)."""
    vote = Vote(approve=True, payload_hash=payload_hash, reason=reason.strip() or None)
    return await _vote(request, request_id, vote, csrf, totp_code.strip() or None)


@router.post("/hitl/ui/requests/{request_id}/reject")
async def reject_form(
    request: Request,
    request_id: str,
    payload_hash: Annotated[str, Form(pattern=r"^[0-9a-f]{64}$")],
    csrf: Annotated[str, Form(max_length=200)],
    reason: Annotated[str, Form(max_length=500)] = "",
    totp_code: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Reject from the page; a reason is required."""
    if not reason.strip():
        message = f"Request {request_id}: a rejection needs a reason."
        return RedirectResponse("/hitl/ui?msg=" + quote(message), status_code=303)
    vote = Vote(approve=False, payload_hash=payload_hash, reason=reason.strip())
    return await _vote(request, request_id, vote, csrf, totp_code.strip() or None)
