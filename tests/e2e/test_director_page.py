"""The director page end to end in headless Chromium (Selenium).

Real services: the accounts service (uvicorn on a loopback port: users, TOTP, `/auth/login`), the hitl
service (uvicorn on a loopback port: the page, the request consumer, the outbox), the OMS on the paper
venue fed through Kafka (holds orders above its approval threshold and publishes `ApprovalRequested` on
oms.order-events.v1) and the OMS's own decision handler on this test's decisions topic. A director logs in
with password + TOTP, approves one order and rejects another; the approved order rests at the paper venue
(accepted), the rejected one is denied and never reaches it. Screenshots go to reports/e2e/.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from services.accounts.adapters import accounts_adapters
from services.hitl.app import create_app as create_hitl_app
from services.hitl.ui import SESSION_COOKIE
from services.oms.adapters import oms_adapters
from services.oms.app import create_app as create_oms_app
from shared.auth.keys import private_key_pem, public_key_pem
from shared.auth.roles import Role, default_scopes
from shared.config import AetherSettings
from shared.domain.types import AccountId
from shared.events.topics import OMS_ORDER_EVENTS
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import hitl_settings, running
from tests.kit.auth import ISSUER, KEY, TotpClock
from tests.kit.oms import oms_settings
from tests.kit.paper import PaperMarket
from tests.reliability.test_r11_approvals import (
    THRESHOLD,
    Stack,
    decision_handler,
    order_status,
    place_big_order,
    start_group_at_end,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "reports" / "e2e"
PASSWORD = "Director page 42 horse"
# Short here so that the step-up path shows within the test (production: 120 s).
OTP_MAX_AGE_S = 6

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) or shutil.which("chromium") is None,
    reason="Debian chromium and chromedriver are not installed (/usr/bin/chromium, /usr/bin/chromedriver)",
)


@pytest.fixture(scope="module")
def e2e_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "director_page") as url:
        yield url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[str]:
    """`app` under uvicorn on 127.0.0.1:`port` (with its lifespan), until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server, task), timeout_s=30, message=f"uvicorn on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # surface a start-up failure
    return bool(server.started)


def accounts_app(base: AetherSettings, database_url: str, keyring: Path) -> FastAPI:
    from services.accounts.app import create_app
    from services.accounts.config import AccountsSettings

    settings = AccountsSettings(
        **base.model_dump(
            exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level", "database_url", "local_kek_file"}
        ),
        database_url=SecretStr(database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
        local_kek_file=keyring,
        log_level="WARNING",
    )
    return create_app(settings)


def admin() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {ISSUER.issue('admin-e2e', [Role.ADMIN], scopes=default_scopes([Role.ADMIN]), accounts=['*'])}"
    }


async def director_with_totp(
    accounts: httpx.AsyncClient, account_ids: list[str], clock: TotpClock
) -> tuple[str, pyotp.TOTP]:
    """A director user granted `account_ids`, enrolled in TOTP through the accounts API; returns name and TOTP."""
    for account_id in account_ids:
        body = {"account_id": account_id, "name": "E2E desk", "kind": "company", "venue": "paper"}
        created = await accounts.post("/accounts", json=body, headers=admin())
        assert created.status_code == 201, created.text
    username = f"dir-{uuid.uuid4().hex[:8]}"
    user = await accounts.post(
        "/users", json={"username": username, "password": PASSWORD, "roles": ["director"]}, headers=admin()
    )
    assert user.status_code == 201, user.text
    for account_id in account_ids:
        grant = await accounts.post(
            f"/users/{user.json()['user_id']}/grants", json={"account_id": account_id}, headers=admin()
        )
        assert grant.status_code in (200, 201), grant.text
    refused = await accounts.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert refused.status_code == 403, refused.text
    enrollment = {"Authorization": f"Bearer {refused.json()['error']['details']['enrollment_token']}"}
    enrolled = await accounts.post("/auth/totp/enroll", json={"password": PASSWORD}, headers=enrollment)
    uri = enrolled.json()["provisioning_uri"]
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    code = clock.next_code(totp)  # each code is accepted once: every use takes the next step
    confirmed = await accounts.post("/auth/totp/confirm", json={"totp_code": code}, headers=enrollment)
    assert confirmed.status_code == 204, confirmed.text
    return username, totp


class Browser:
    """Headless Chromium; every call runs in a thread so the servers on this event loop keep answering."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)

    async def do(self, action: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(action, self.driver)

    async def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.do(lambda d: d.save_screenshot(str(path)))
        return path

    def close(self) -> None:
        self.driver.quit()


def _fill_and_submit(form_selector: str, values: dict[str, str]) -> Callable[[Any], None]:
    from selenium.webdriver.common.by import By

    def action(driver: Any) -> None:
        form = driver.find_element(By.CSS_SELECTOR, form_selector)
        for name, value in values.items():
            field = form.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    return action


def _text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def _shows(expected: str) -> Callable[[Any], str]:
    """Wait (the form's submit navigates) until the page shows `expected`; return the page text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def action(driver: Any) -> str:
        wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: expected in _text(d))
        return _text(driver)

    return action


async def test_director_logs_in_with_totp_approves_one_order_and_rejects_another(
    settings: AetherSettings,
    e2e_database_url: str,
    kafka_bootstrap: str,
    paper_market: PaperMarket,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    approve_account, reject_account = f"e2e-approve-{suffix}", f"e2e-reject-{suffix}"
    later_account = f"e2e-later-{suffix}"
    accounts_port, hitl_port = _free_port(), _free_port()
    hitl = hitl_settings(
        settings,
        e2e_database_url,
        order_events_topic=OMS_ORDER_EVENTS,
        otp_max_age_s=OTP_MAX_AGE_S,
        accounts_url=f"http://127.0.0.1:{accounts_port}",
    )
    await start_group_at_end(kafka_bootstrap, hitl.requests_consumer_group, OMS_ORDER_EVENTS)
    oms_app = create_oms_app(
        oms_settings(settings, e2e_database_url, paper_market, default_approval_threshold=THRESHOLD)
    )
    async with contextlib.AsyncExitStack() as stack:
        accounts_service = accounts_app(settings, e2e_database_url, tmp_path / "kek.json")
        accounts_url = await stack.enter_async_context(served(accounts_service, accounts_port))
        clock = TotpClock()
        accounts_adapters(accounts_service.state.runtime).auth.totp.clock = clock
        hitl_url = await stack.enter_async_context(served(create_hitl_app(hitl), hitl_port))
        oms = await stack.enter_async_context(running(oms_app, "http://oms"))
        await stack.enter_async_context(decision_handler(oms_app.state.runtime, hitl.decisions_topic))
        accounts = await stack.enter_async_context(httpx.AsyncClient(base_url=accounts_url))
        hitl_client = await stack.enter_async_context(httpx.AsyncClient(base_url=hitl_url))
        await eventually(lambda: _ready(oms), timeout_s=30, message="oms ready")
        await eventually(lambda: _ready(accounts), timeout_s=30, message="accounts ready")
        await paper_market.publish_book(bids=[("99", "50")], asks=[("100", "50")])
        venue = oms_adapters(oms_app.state.runtime).venue

        username, totp = await director_with_totp(accounts, [approve_account, reject_account, later_account], clock)
        services = Stack(oms, [hitl_client], venue, oms_app.state.runtime.engine)
        to_approve = await place_big_order(services, approve_account, "op-e2e", [Role.OPERATOR])
        to_reject = await place_big_order(services, reject_account, "op-e2e", [Role.OPERATOR])

        browser = await asyncio.to_thread(Browser)
        stack.callback(browser.close)
        await browser.do(lambda d: d.get(f"{hitl_url}/hitl/ui/login"))
        await browser.shot("01-login")
        await browser.do(
            _fill_and_submit(
                "#login-form", {"username": username, "password": PASSWORD, "totp_code": clock.next_code(totp)}
            )
        )
        page = await browser.do(_shows("Approval inbox"))
        assert to_approve["order"]["order_id"] in page
        assert "op-e2e" in page
        await browser.shot("02-inbox")

        approve_row = f"tr[data-subject='{to_approve['order']['order_id']}'] form.approve-form"
        await browser.do(_fill_and_submit(approve_row, {"reason": "within mandate"}))
        await browser.do(_shows("the request is approved"))
        await browser.shot("03-approved")

        reject_row = f"tr[data-subject='{to_reject['order']['order_id']}'] form.reject-form"
        await browser.do(_fill_and_submit(reject_row, {"reason": "too large for this desk"}))
        await browser.do(_shows("the request is rejected"))
        await browser.shot("04-rejected-history")

        approved_id, rejected_id = to_approve["order"]["order_id"], to_reject["order"]["order_id"]
        await eventually(lambda: _status_is(services, approved_id, "accepted"), timeout_s=30, message="order sent")
        await eventually(lambda: _status_is(services, rejected_id, "denied"), timeout_s=30, message="order denied")
        assert [o.client_order_id for o in await venue.open_orders(AccountId(approve_account))] == [
            to_approve["order"]["client_order_id"]
        ]  # the limit buy at 95 rests under the ask of 100
        assert await venue.open_orders(AccountId(reject_account)) == []
        await browser.do(_shows("too large for this desk"))

        # Once the login's TOTP proof is older than the limit, a vote needs a code: the page steps up at accounts.
        later = await place_big_order(services, later_account, "op-e2e", [Role.OPERATOR])
        await asyncio.sleep(OTP_MAX_AGE_S + 0.5)
        await browser.do(lambda d: d.get(f"{hitl_url}/hitl/ui"))
        later_row = f"tr[data-subject='{later['order']['order_id']}'] form.approve-form"
        await browser.do(_fill_and_submit(later_row, {"reason": "stale proof"}))
        await browser.do(_shows("fresh_otp_required"))
        await browser.shot("05-step-up-needed")
        await browser.do(_fill_and_submit(later_row, {"reason": "after step-up", "totp_code": clock.next_code(totp)}))
        await browser.do(_shows("the request is approved"))
        await browser.shot("06-approved-after-step-up")
        later_id = later["order"]["order_id"]
        await eventually(lambda: _status_is(services, later_id, "accepted"), timeout_s=30, message="later order sent")
        # Logging out revokes the access token at the accounts service: the old cookie opens nothing any more.
        token = (await browser.do(lambda d: d.get_cookie(SESSION_COOKIE)))["value"]
        readable = await hitl_client.get("/hitl/requests", headers={"Authorization": f"Bearer {token}"})
        assert readable.status_code == 200, readable.text
        await browser.do(lambda d: d.find_element("css selector", "form[action='/hitl/ui/logout'] button").click())
        await browser.do(_shows("Logged out."))
        revoked = await hitl_client.get("/hitl/requests", headers={"Authorization": f"Bearer {token}"})
        assert revoked.status_code == 401
        shots = ("01-login", "02-inbox", "03-approved", "04-rejected-history", "05-step-up-needed")
        for name in (*shots, "06-approved-after-step-up"):
            assert (SCREENSHOTS / f"{name}.png").stat().st_size > 0


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _status_is(stack: Stack, order_id: str, expected: str) -> bool:
    return await order_status(stack, order_id) == expected
