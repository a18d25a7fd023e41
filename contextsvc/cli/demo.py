"""``contextsvc demo``: load a small, realistic set of journeys for demos (API.md 7.2).

The journeys come from :mod:`contextsvc.domain.demo`, built by the API's own rules;
this command writes them through the store contract, a few dozen services per unit
of work, so that it is safe on a store a server is using.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import click

from ..domain import demo, lifecycle, timeutil
from ..domain.timed import TimedStore
from . import Context, Failure, main, pass_context, progress

BATCH = 25  # services per unit of work: other writers wait for one batch at most
DEFAULT_URL = "http://127.0.0.1:8080/genesys/1/cs"


class Timestamp(click.ParamType):
    name = "TIMESTAMP"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return timeutil.parse(value)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


@main.command("demo", help=f"""Load a small, realistic set of journeys for demos.

\b
Fixed journeys, whatever the seed:
  customer {demo.WIRELESS_CUSTOMER}, contact key {demo.WIRELESS_CONTACT_KEY}: the dropped wireless
    caller. An anonymous service on the number; the call drops in the queue;
    the caller rings back and the IVR resumes the service by contact key; the
    agent associates it with the customer; the account is opened. Then the
    phone's delivery. An older IVR coverage check from the number stays
    anonymous.
  customer {demo.HOTEL_CUSTOMER}: the hotel booking, with its three states
    (collect-search-information, get-proposals, validate-proposal) and their
    tasks.
  contact key {demo.WAITING_CONTACT_KEY}: a caller who dropped out of the queue
    yesterday: an active anonymous service, waiting to be resumed.

Around them, --customers identified customers (and a quarter as many contacts
nobody identified) with sales, support, billing, plan changes, deliveries and web
visits over the last --weeks weeks: some completed, some active, some idle for days.

Time: every event is in the past of --now, by default the current hour (rounded
down); the same --seed, --customers, --weeks and --now give the same data. Nothing
happens after --now: journeys that would go on later are left active.

Every service carries the attached data "{demo.MARKER}": true. A store that already
holds the demo's journeys is refused unless --force is given, which adds them again.
The store hands out the ids. Prints one line: what was loaded, and two lookups to
try against a server on the same store (--url), with the API and on the journey
page.""")
@click.option("--seed", type=int, default=demo.DEFAULT_SEED, show_default=True,
              help="Seed of the varied journeys.")
@click.option("--customers", type=click.IntRange(0, 10000), default=demo.DEFAULT_CUSTOMERS,
              show_default=True, help="Identified customers besides the fixed ones.")
@click.option("--weeks", type=click.IntRange(1, 52), default=demo.DEFAULT_WEEKS,
              show_default=True, help="How far back the journeys go.")
@click.option("--now", "now", type=Timestamp(), default=None,
              help="The moment the journeys lead up to (ISO 8601) [default: this hour].")
@click.option("--force", is_flag=True, help="Add the journeys even if the store has them.")
@click.option("--url", default=DEFAULT_URL, show_default=True,
              help="Base URL of the server, for the lookups printed.")
@pass_context
def demo_command(ctx: Context, seed: int, customers: int, weeks: int, now: datetime | None,
                 force: bool, url: str) -> None:
    """Load the demo journeys; see the command's help for what they are."""
    if ctx.settings["storage"]["engine"] == "memory":
        raise Failure("the memory engine keeps nothing once the command ends; "
                      "use the file engine ([storage] engine = file)")
    docs = demo.journeys(seed, customers, weeks, now or demo.anchor(ctx.clock()))
    policy = ctx.policy
    with ctx.store() as store:
        if not force and _loaded(TimedStore(store, policy, ctx.clock)):
            raise Failure(f"the store already holds the demo's journeys (customer "
                          f"{demo.WIRELESS_CUSTOMER}); --force adds them again")
        batches = [docs[i:i + BATCH] for i in range(0, len(docs), BATCH)]
        written = []
        with progress(batches, label="demo journeys") as bar:
            for batch in bar:
                written += store.create_services(
                    [lambda sid, doc=doc: demo.stored(doc, sid, policy) for doc in batch])
    click.echo(_summary(written, url, ctx, policy))



def _loaded(store: TimedStore) -> bool:
    with store.customer_services(demo.WIRELESS_CUSTOMER) as selection:
        return any(doc.get("data", {}).get(demo.MARKER) is True for doc in selection)


def _summary(docs: list[dict[str, Any]], url: str, ctx: Context,
             policy: lifecycle.Policy) -> str:
    ids = [doc["service_id"] for doc in docs]
    customers = {doc["customer_id"] for doc in docs if doc.get("customer_id")}
    anonymous = sum(1 for doc in docs if not doc.get("customer_id"))
    active = sum(1 for doc in docs if "completed" not in doc)
    base = url.rstrip("/")
    nested = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true"
    # with tenants (API.md 8.2): the tenant the services went to, named in each address
    header = f"-H 'ContactCenterId: {ctx.tenant.name}' " if ctx.tenant else ""
    tenant = f"&tenant={quote(ctx.tenant.name)}" if ctx.tenant else ""
    lookups = (f"curl -s {header}'{base}/customers/{quote(demo.WIRELESS_CUSTOMER, safe='')}"
               f"/services?{nested}'",
               f"curl -s {header}'{base}/services/anonymous/"
               f"{quote(demo.WAITING_CONTACT_KEY, safe='')}/active?active_states=true'")
    pages = (f"{base}/journey?customer_id={quote(demo.WIRELESS_CUSTOMER, safe='')}{tenant}",
             f"{base}/journey?contact_key={quote(demo.WAITING_CONTACT_KEY, safe='')}{tenant}")
    line = (f"loaded {len(docs)} services ({active} active) of {len(customers)} customers "
            f"and {anonymous} anonymous services, ids {min(ids)} to {max(ids)}; "
            f"try {lookups[0]} and {lookups[1]}, or open the journey page: {pages[0]} "
            f"and {pages[1]}")
    gone = _lifecycle(docs, policy, ctx)
    return f"{line}; {gone}" if gone else line


def _lifecycle(docs: list[dict[str, Any]], policy: lifecycle.Policy, ctx: Context) -> str:
    """What the configured lifecycle (API.md 6) already did to the journeys: they
    were last updated in the past, so some may be expired or idle past a deadline."""
    if not policy.active:
        return ""
    now, expired, completed = ctx.clock(), 0, 0
    for doc in docs:
        was_active = "completed" not in doc
        if not lifecycle.settle(doc, policy, now):
            expired += 1
        elif was_active and "completed" in doc:
            completed += 1
    parts = [f"{expired} already expired" if expired else "",
             f"{completed} auto-completed" if completed else ""]
    said = " and ".join(p for p in parts if p)
    return f"under the [lifecycle] settings, {said}" if said else ""
