"""The manual's billing flows (§4.1, §4.2, §5.2), driven exactly as its scripts do.

An in-process admin API listens on a real port; the manual's Python functions
(``manual_billing``) call it with ``requests`` from a worker thread and its shell
examples with ``curl`` and ``jq``.  A clock under the test's control stands in
for October 2024, so that the monthly revenue and pro-rata figures the manual's
scripts rebuild from ``GET /operations`` can be checked against the actions taken.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from catena import ids
from tests.admin_api import manual_billing as billing
from tests.admin_api._subscribers_support import make_package
from tests.conftest import Api

PLACEHOLDER_URL = "https://your-catena-domain.com/tv-management/api/v1"
pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")


class Clock:
    """Stands in for ``time`` inside ``catena.ids``: ids, and so operations, are made 'then'."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass
class Month:
    api: Api
    a: str  # subscribed by the manual's shell script, upgraded by adding, downgraded, deleted
    b: str  # created by the billing webhook, upgraded by replacing, disabled and enabled
    c: str  # imported in September, subscribed again in November
    packages: dict[str, str]


async def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking manual function while the event loop keeps serving the API."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def bash(
    script: str, url: str, key: str, filled: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a shell example with its placeholders (the manual's sample ids) filled in."""
    text = script.replace(PLACEHOLDER_URL, url).replace("your-api-key", key)
    for placeholder, value in (filled or {}).items():
        text = text.replace(placeholder, value)
    env = {"PATH": "/usr/bin:/bin", **(env or {})}
    process = await asyncio.create_subprocess_exec(
        "bash", "-euc", text, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err)
    return out.decode()


async def subscriber(api: Api, subscriber_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/subscribers/{subscriber_id}")
    assert status == 200, body
    return dict(body)


@pytest.fixture
async def october(
    api: Api, portal: Any, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Month:
    clock = Clock()
    monkeypatch.setattr(ids, "time", clock)
    monkeypatch.setattr(ids, "_generator", ids.IdGenerator(ids._generator.node))
    url, key = str(api.client.make_url("/tv-management/api/v1")), portal.apiKey
    billing.configure(url, key)
    clock.set("2024-09-01T00:00:00")
    packages = {
        name: await make_package(pool, portal.portalId, name) for name in ("basic", "premium", "sport")
    }
    monkeypatch.setattr(billing, "TARIFFS", dict(packages))
    monkeypatch.setattr(billing, "PACKAGE_PRICES", {packages["basic"]: 10.0, packages["premium"]: 20.0,
                                                      packages["sport"]: 15.0})  # fmt: skip
    monkeypatch.setattr(billing, "LOG", [])
    monkeypatch.setattr(billing, "FAILED", [])

    # September 20: C arrives with the migration script (§4.1.11), with basic.
    clock.set("2024-09-20T10:00:00")
    source = tmp_path / "subscribers.csv"
    source.write_text(f"name,country_code,phone,packages\nПётр,7,9000000003,{packages['basic']}\n")
    await run(billing.import_subscribers, str(source))
    c = await run(billing.get_subscriber_id, "+79000000003")

    # October 1: A, with the manual's shell script (create, jq the id, subscribe basic).
    clock.set("2024-10-01T10:00:00")
    out = await bash(billing.BASH_NEW_SUBSCRIBER, url, key, env={"PACKAGE_ID": packages["basic"]})
    a = out.rsplit("Абонент создан с ID: ", 1)[1].strip()
    assert (await subscriber(api, a))["packages"] == [packages["basic"]]

    # October 3: the billing webhook sees B pay for basic; B is created on the way.
    clock.set("2024-10-03T12:00:00")
    answer = await run(
        billing.billing_webhook,
        {"event": "payment.success", "user_phone": "+79161112233", "tariff_name": "basic"},
    )
    assert answer == {"status": "ok", "message": "Subscription activated"}
    b = await run(billing.get_subscriber_id, "+79161112233")

    # October 10: A upgrades by adding premium (variant 1).
    clock.set("2024-10-10T09:00:00")
    add = {"sK19SW3AAAE.": a, "premium-package-id": packages["premium"]}
    await bash(billing.BASH_UPGRADE_ADD, url, key, add)
    assert sorted((await subscriber(api, a))["packages"]) == sorted([packages["basic"], packages["premium"]])

    # October 15: B upgrades by replacing basic with premium (variant 2).
    clock.set("2024-10-15T18:00:00")
    replace = {"sK19SW3AAAE.": b, "basic-package-id": packages["basic"]}
    replace["premium-package-id"] = packages["premium"]
    await bash(billing.BASH_UPGRADE_REPLACE, url, key, replace)
    assert (await subscriber(api, b))["packages"] == [packages["premium"]]

    # October 20: A downgrades (§4.2.8): premium off; basic on, which A still has (409, ignored).
    clock.set("2024-10-20T08:00:00")
    assert await run(billing.downgrade_subscription, a, "premium", "basic") == {
        "success": True, "new_package": "basic",
    }  # fmt: skip
    assert (await subscriber(api, a))["packages"] == [packages["basic"]]

    # October 22-25: B is disabled for non-payment, then enabled again.
    clock.set("2024-10-22T00:00:00")
    status, body = await api.post(f"/subscribers/{b}/disable", {"reason": "неоплата"})
    assert status == 200 and body["disabled"] is True and body["packages"] == [packages["premium"]]
    clock.set("2024-10-25T00:00:00")
    assert (await api.post(f"/subscribers/{b}/enable"))[0] == 200

    # October 28: A is deleted (§4.1.9); its basic subscription ends with it.
    clock.set("2024-10-28T12:00:00")
    delete = {"sK19SW3AAAE.": a}
    await bash(billing.BASH_DELETE, url, key, delete)
    assert (await api.get(f"/subscribers/{a}"))[0] == 404

    # November 2: C buys sport through the retrying client (§4.2.9), twice.
    clock.set("2024-11-02T09:00:00")
    assert await run(billing.safe_create_subscription, c, packages["sport"]) == {"success": True}
    assert await run(billing.safe_create_subscription, c, packages["sport"]) == {
        "success": True, "already_exists": True,
    }  # fmt: skip
    return Month(api, a, b, c, packages)


async def test_the_flows_leave_the_expected_state(october: Month) -> None:
    api, p = october.api, october.packages
    assert (await subscriber(api, october.b))["packages"] == [p["premium"]]
    assert sorted((await subscriber(api, october.c))["packages"]) == sorted([p["basic"], p["sport"]])
    _, listed = await api.get("/subscribers")
    assert {s["subscriberId"] for s in listed["subscribers"]} == {october.b, october.c}
    assert billing.LOG == [f"downgrade {october.a} premium->basic"]


async def test_monthly_revenue_as_the_manual_computes_it(october: Month) -> None:
    revenue = await run(billing.calculate_monthly_revenue, 2024, 10)
    # Created in October: A basic, B basic, A premium, B premium (A's re-add of basic was a 409).
    # Cancelled: B basic (replaced), A premium (downgrade), A basic (A deleted).
    assert revenue == {
        "total_revenue": 60.0,
        "packages": [
            {"package": "premium", "created": 2, "cancelled": 1, "net_growth": 1, "revenue": 40.0},
            {"package": "basic", "created": 2, "cancelled": 2, "net_growth": 0, "revenue": 20.0},
        ],
    }
    september = await run(billing.calculate_monthly_revenue, 2024, 9)
    assert september["total_revenue"] == 10.0 and september["packages"][0]["package"] == "basic"
    november = await run(billing.calculate_monthly_revenue, 2024, 11)
    assert november["total_revenue"] == 15.0 and november["packages"][0]["package"] == "sport"


async def test_prorata_as_the_manual_computes_it(october: Month) -> None:
    start, end = datetime(2024, 10, 1, tzinfo=UTC), datetime(2024, 11, 1, tzinfo=UTC)
    bill_a = await run(billing.calculate_prorata_billing, october.a, start, end)
    # basic Oct 1 10:00 → Oct 28 12:00: 27 days × 10/30; premium Oct 10 09:00 → Oct 20 08:00: 9 days × 20/30.
    assert [(i["package_name"], i["days"], i["cost"]) for i in bill_a["items"]] == [
        ("basic", 27, 9.0),
        ("premium", 9, 6.0),
    ]
    assert bill_a["total_cost"] == 15.0 and bill_a["period"] == "2024-10-01 - 2024-11-01"
    bill_b = await run(billing.calculate_prorata_billing, october.b, start, end)
    # basic Oct 3 12:00 → Oct 15 18:00: 12 days × 10/30; premium Oct 15 18:00 → Nov 1: 16 days × 20/30.
    assert [(i["package_name"], i["days"], i["cost"]) for i in bill_b["items"]] == [
        ("basic", 12, 4.0),
        ("premium", 16, 10.67),
    ]
    assert bill_b["total_cost"] == 14.67
    bill_c = await run(billing.calculate_prorata_billing, october.c, start, end)
    assert bill_c["items"] == [] and bill_c["total_cost"] == 0


async def test_monthly_invoices(october: Month, tmp_path: Path) -> None:
    target = tmp_path / "invoices.csv"
    result = await run(billing.generate_monthly_invoices, 2024, 10, str(target), UTC)
    # A was deleted, so the manual's script (which lists current subscribers) bills B only.
    assert result == {"invoices_count": 1, "total_revenue": 14.67, "file": str(target)}
    with target.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"subscriber_id": october.b, "subscriber_name": "+79161112233", "phone": "+79161112233",
                     "amount": "$14.67"}]  # fmt: skip


async def test_errors_reach_the_scripts_as_messages(october: Month) -> None:
    outcome = await run(billing.safe_create_subscription, october.b, "premiumK19SW3AAAE.")
    assert outcome == {"success": False, "error": "Failed after retries"}
    assert billing.FAILED == [("create_subscription", october.b, "premiumK19SW3AAAE.")]
    assert billing.LOG[-3:] == ["error: Failed to create subscription: no such package"] * 3
    # subscription.expired ends the subscription through DELETE with a JSON body.
    answer = await run(
        billing.billing_webhook,
        {"event": "subscription.expired", "user_phone": "+79161112233", "tariff_name": "premium"},
    )
    assert answer["status"] == "ok" and (await subscriber(october.api, october.b))["packages"] == []


async def test_periodic_sync(october: Month, monkeypatch: pytest.MonkeyPatch) -> None:
    # The billing database: C keeps basic and sport, B's premium expired, D is new with premium.
    monkeypatch.setattr(
        billing,
        "BILLING_ACTIVE",
        [
            {"phone": "+79000000003", "tariff": "basic"},
            {"phone": "+79000000003", "tariff": "sport"},
            {"phone": "+79995550000", "tariff": "premium"},
        ],
    )
    await run(billing.sync_subscriptions)
    p = october.packages
    _, listed = await october.api.get("/subscribers")
    state = {f"+{s['phoneCountryCode']}{s['phone']}": sorted(s["packages"]) for s in listed["subscribers"]}
    assert state == {
        "+79161112233": [],
        "+79000000003": sorted([p["basic"], p["sport"]]),
        "+79995550000": [p["premium"]],
    }
    await run(billing.sync_subscriptions)  # a second run finds nothing to do
    _, again = await october.api.get("/subscribers")
    assert again == listed
