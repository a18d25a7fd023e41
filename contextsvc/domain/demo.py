"""Demo journeys (``contextsvc demo``): the seeds' stories as data, and a few dozen
varied customers around them, built by the same rules and from the same bodies as
the API's requests, each event at its own moment in the past.

Nothing here writes: :func:`journeys` returns service documents without ids, in
the order they started, and :func:`stored` gives one its id as a store's
``create_services`` hands it out. The same ``seed``, ``customers``, ``weeks`` and
``now`` give the same documents.

Fixed journeys, whatever the seed (``now`` places them in time):

* :data:`WIRELESS_CUSTOMER` / :data:`WIRELESS_CONTACT_KEY`: the dropped caller of
  the *Query Services* document. An unidentified caller rings about a new wireless
  account; the IVR starts an anonymous service on the number; the call drops after
  ten minutes in the queue (the service stays active); the caller rings back, the
  IVR finds the service by contact key and puts the caller back in the queue; the
  agent identifies the customer and associates the service; the account is opened
  and the service completed. The same number made an IVR coverage check weeks
  before that nobody identified (still anonymous), and the new phone's delivery
  follows the call.
* :data:`HOTEL_CUSTOMER`: the hotel booking of *Services, States, and Tasks*, its
  three states (collect the search information, get proposals, validate the
  proposal) with their tasks, the attached data of the seeds' examples, and the
  feedback after the stay.
* :data:`WAITING_CONTACT_KEY`: a caller who dropped out of the queue yesterday and
  has not rung back: an active anonymous service, what an IVR would resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from . import inputs, lifecycle, rules, timeutil
from .lifecycle import Policy

Doc = dict[str, Any]

WIRELESS_CUSTOMER = "ABC1234"
WIRELESS_CONTACT_KEY = "408-832-7799"
HOTEL_CUSTOMER = "0004Va58A92T0018"
WAITING_CONTACT_KEY = "408-555-0142"
# attached data on every service the demo writes, so that its data can be told
# apart from a real customer's, and so that a second run can notice the first
MARKER = "demo"

DEFAULT_SEED = 1
DEFAULT_CUSTOMERS = 36
DEFAULT_WEEKS = 3


# the hour (UTC) from which the fixed stories' "today" is the current day (see _World.day)
STORY_DAY_STARTS = 11


def anchor(now: datetime) -> datetime:
    """The moment the journeys lead up to by default: the current hour, so that runs
    within the same hour give the same data."""
    return now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def journeys(seed: int = DEFAULT_SEED, customers: int = DEFAULT_CUSTOMERS,
             weeks: int = DEFAULT_WEEKS, now: datetime | None = None) -> list[Doc]:
    """The demo's services (without ids) in the order they started: the fixed
    stories, then ``customers`` identified customers and about a quarter as many
    unidentified contacts, their journeys spread over the ``weeks`` before ``now``
    (default: :func:`anchor` of the current time). Nothing happens after ``now``: a
    journey that would go on later is left as far as it got, active."""
    world = _World(random.Random(seed), anchor(lifecycle.utc_now()) if now is None else now,
                   weeks)
    _wireless_caller(world)
    _hotel_booking(world)
    _waiting_caller(world)
    for _ in range(customers):
        world.customer()
    for _ in range((customers + 3) // 4):
        world.unidentified()
    docs = [j.doc for j in world.journeys if j.doc is not None]
    docs.sort(key=lambda doc: doc["started"]["timestamp"])  # stable: ties keep their order
    return docs


def stored(doc: Doc, sid: int, policy: Policy) -> Doc:
    """``doc`` as the API would have stored it under id ``sid``: its lifecycle fields
    count from its last event, as if each request had been made at its moment."""
    doc = {**doc, "service_id": sid}
    lifecycle.mark_due(doc, policy)
    return doc


# ---------------------------------------------------------------- one service
class Journey:
    """One service, changed by the rules from the bodies a client would send, each
    event at the journey's clock (:meth:`wait` moves it on). A step that would
    happen after the horizon, and every step after it, does not happen: the
    service stays as it was then."""

    def __init__(self, horizon: datetime, at: datetime, body: Doc):
        self.horizon, self.now = horizon, at
        self.doc: Doc | None = None
        self.stopped = False
        if self._due():
            event = inputs.service_start({**body, "timestamp": timeutil.format(at),
                                          MARKER: True})
            self.doc = rules.new_service(0, event, at)
            lifecycle.touch(self.doc, at)

    def wait(self, **delta: float) -> Journey:
        self.now += timedelta(**delta)
        return self

    def at(self, moment: datetime) -> Journey:
        self.now = max(self.now, moment)
        return self

    def _due(self) -> bool:
        if self.now > self.horizon:
            self.stopped = True
        return not self.stopped

    def _do(self, step: Callable[[Doc], Any]) -> Any:
        if self.doc is None or not self._due():
            return None
        result = step(self.doc)
        lifecycle.touch(self.doc, self.now)  # every write moves the last update
        return result

    def _stamp(self, body: Doc | None) -> Doc:
        return {"timestamp": timeutil.format(self.now), **(body or {})}

    # the requests of API.md section 3, one method each
    def state(self, state_type: str, body: Doc | None = None) -> int | None:
        event = inputs.state_start({"state_type": state_type, **self._stamp(body)})
        return self._do(lambda doc: rules.start_state(doc, event)["state_id"])

    def end_state(self, stid: int | None, body: Doc | None = None) -> None:
        event = inputs.end(self._stamp(body))
        self._do(lambda doc: rules.end_state(doc, stid, event))

    def transition(self, stid: int | None, to: Doc, source: Doc | None = None,
                   body: Doc | None = None) -> int | None:
        # stid is None only when the journey stopped before that state: the body
        # still has to validate, though the step will not happen
        source_event, target = inputs.transition(
            {**self._stamp(body), "from": {"state_id": stid or 1, **(source or {})}, "to": to})
        return self._do(lambda doc: rules.transition(doc, source_event, target)["state_id"])

    def task(self, task_type: str, stid: int | None = None,
             body: Doc | None = None) -> int | None:
        fields = {"task_type": task_type, **({"state_id": stid} if stid else {})}
        event = inputs.task_start({**fields, **self._stamp(body)})
        return self._do(lambda doc: rules.start_task(doc, event)["task_id"])

    def end_task(self, tid: int | None, body: Doc | None = None) -> None:
        event = inputs.task_end(self._stamp(body))
        self._do(lambda doc: rules.end_task(doc, tid, event))

    def step(self, task_type: str, stid: int | None, minutes: float,
             start: Doc | None = None, end: Doc | None = None) -> None:
        """A task started now and completed ``minutes`` later."""
        tid = self.task(task_type, stid, start)
        self.wait(minutes=minutes).end_task(tid, end)

    def associate(self, customer_id: str, body: Doc | None = None) -> None:
        # no timestamp: an associate body's timestamp would replace the start's
        event = inputs.associate(body or {})
        self._do(lambda doc: rules.associate(doc, inputs.customer_id(customer_id), event,
                                             self.now))

    def state_data(self, stid: int | None, key: str, value: Any) -> None:
        """``PUT /services/{sid}/states/{stid}/extensions/{key}``."""
        self._do(lambda doc: rules.set_state_extension(doc, stid, key, value, False))

    def end(self, body: Doc | None = None) -> None:
        event = inputs.service_end(self._stamp(body))
        self._do(lambda doc: rules.end_service(doc, event, self.now))


# ---------------------------------------------------------------- the world
_PLANS = [
    {"name": "Essential 5G", "data_gb": 15, "monthly": 35.0},
    {"name": "Unlimited 5G", "data_gb": None, "monthly": 55.0},
    {"name": "Unlimited Plus", "data_gb": None, "monthly": 70.0},
    {"name": "Family 4 lines", "data_gb": 100, "monthly": 120.0},
]
_DEVICES = ["Pixel 8", "Galaxy S23", "iPhone 14", "Moto G Power", "Galaxy A54", "iPhone 15"]
_CARRIERS = ["UPS", "FedEx", "USPS"]
_AREA_CODES = ["408", "650", "415", "510", "669"]
_ISSUES = [("no-signal", "No signal indoors"), ("slow-data", "Data slow in the evening"),
           ("no-calls", "Cannot make calls"), ("voicemail", "Voicemail not working"),
           ("roaming", "No service abroad")]
_CHARGES = [("roaming", 42.5), ("late-fee", 15.0), ("premium-sms", 9.99),
            ("device-installment", 33.33), ("international-calls", 27.8)]
_ZIPS = ["95134", "95054", "94043", "94107", "94612", "95112"]


class _World:
    """Who the demo's customers are, and what happened to them."""

    def __init__(self, rng: random.Random, now: datetime, weeks: int):
        self.rng, self.horizon = rng, now
        self.first = now - timedelta(weeks=weeks)
        self.journeys: list[Journey] = []
        self.customer_ids = {WIRELESS_CUSTOMER, HOTEL_CUSTOMER}
        self.contact_keys = {WIRELESS_CONTACT_KEY, WAITING_CONTACT_KEY}

    def journey(self, at: datetime, body: Doc) -> Journey:
        journey = Journey(self.horizon, at, body)
        self.journeys.append(journey)
        return journey

    # ids a contact center would see
    def interaction(self) -> str:
        return f"{self.rng.getrandbits(72):018X}"

    def session(self) -> str:
        r = self.rng
        return f"{r.getrandbits(32):08X}-{r.getrandbits(32):08X}-{r.randrange(10000):04d}"

    def agent(self) -> int:
        return self.rng.randrange(5001, 5025)

    def ivr(self) -> Doc:
        return {"media_type": "voice", "interaction_id": self.interaction(),
                "application_type": "IVR", "application_id": 40, "resource_type": "GVP"}

    def web(self) -> Doc:
        return {"media_type": "web", "session_id": self.session(), "application_type": "web",
                "application_id": 41}

    def desk(self, media: str = "voice") -> Doc:
        return {"media_type": media, "interaction_id": self.interaction(),
                "resource_type": "agent-desktop", "resource_id": self.agent()}

    def new_customer_id(self) -> str:
        while True:
            letters = "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
            cid = f"{letters}{self.rng.randrange(1000, 10000)}"
            if cid not in self.customer_ids:
                self.customer_ids.add(cid)
                return cid

    def new_phone(self) -> str:
        # 555-0100 to 555-0199 are set aside for fiction in North America
        while True:
            key = f"{self.rng.choice(_AREA_CODES)}-555-01{self.rng.randrange(100):02d}"
            if key not in self.contact_keys:
                self.contact_keys.add(key)
                return key

    def new_email(self) -> str:
        while True:
            key = f"visitor{self.rng.randrange(1000, 10000)}@example.com"
            if key not in self.contact_keys:
                self.contact_keys.add(key)
                return key

    def day(self, before: int, hh: int, mm: int, ss: int) -> datetime:
        """A time of day (UTC), ``before`` days before the stories' today; the stories
        happen at the same hours whatever the hour of ``now``. Their today is the
        current day from STORY_DAY_STARTS on, else the day before: early in the day,
        counting from midnight would leave the stories too little time to play out
        (the wireless caller's delivery arrives some 42 hours after the call, the
        waiting caller would not yet be idle)."""
        today = self.horizon - timedelta(hours=STORY_DAY_STARTS)
        return today.replace(hour=hh, minute=mm, second=ss, microsecond=0) - timedelta(
            days=before)

    def moment(self, earliest: datetime | None = None,
               latest: datetime | None = None) -> datetime:
        """A moment between ``earliest`` (default: the start of the period) and
        ``latest`` (default: now), in the contact center's opening hours (15:00 to
        03:00 UTC) when it can be."""
        start = max(earliest or self.first, self.first)
        end = min(latest or self.horizon, self.horizon)
        span = max(60, int((end - start).total_seconds()))
        at = start + timedelta(seconds=self.rng.randrange(span))
        if 3 <= at.hour < 15:  # night: twelve hours on, or back if on is still to come
            later, earlier = at + timedelta(hours=12), at - timedelta(hours=12)
            at = later if later < self.horizon else earlier if earlier >= start else at
        return at.replace(microsecond=self.rng.randrange(1000) * 1000)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # ------------------------------------------------------------ who
    def customer(self) -> None:
        """An identified customer with one to five services over the period."""
        cid = self.new_customer_id()
        phone = self.new_phone()
        at = self.moment()
        for _ in range(self.rng.choice([1, 1, 2, 2, 2, 3, 3, 4, 5])):
            kind = self.rng.choices(_CUSTOMER_JOURNEYS, weights=[w for _, w in _KINDS])[0]
            kind(self, cid, phone, at)
            # the next contact: hours to a couple of weeks later (three days on average)
            gap = timedelta(hours=2) + timedelta(days=self.rng.expovariate(1 / 3))
            at = self.moment(at + gap, at + gap + timedelta(hours=12))
            if at > self.horizon:
                break

    def unidentified(self) -> None:
        """A contact nobody identified: an IVR self-service or a dropped call on a
        phone number, or a web visit on an e-mail address."""
        self.rng.choice([_self_service, _dropped_call, _web_browse])(self, self.moment())


# ---------------------------------------------------------------- the seeds' stories
def _wireless_caller(w: _World) -> None:
    first = w.day(2, 17, 11, 47)
    # weeks before, an IVR coverage check from the same number: nobody identified it
    w.journey(w.day(19, 22, 40, 3), {
        "contact_key": WIRELESS_CONTACT_KEY, "service_type": "coverage-check",
        **w.ivr(), "auto_closed": True, "zip_code": "95134",
        "coverage": {"5g": True, "indoor": "good"}})

    j = w.journey(first, {
        "contact_key": WIRELESS_CONTACT_KEY, "service_type": "new-wireless-account",
        "media_type": "voice", "interaction_id": "IVR-0001", "application_type": "IVR",
        "application_id": 40, "resource_type": "GVP", "est_duration": 86400,
        "ivr_path": ["main", "sales"]})
    menu = j.state("ivr-menu", {"menu": "main"})
    j.wait(seconds=12).step("identify-caller", menu, 0.5, {"method": "ani"},
                            {"disposition": "not-identified",
                             "disposition_desc": "no customer with this number"})
    j.wait(seconds=5).step("select-service", menu, 0.4, end={
        "disposition": "new-wireless-account", "ivr_choice": "2"})
    queue = j.wait(seconds=3).transition(menu, {"state_type": "agent-queue",
                                                "queue": "wireless-sales"},
                                         {"disposition": "routed"})
    # ten minutes in the queue, then the call drops; the service stays active
    j.wait(minutes=10, seconds=4).state_data(queue, "call_dropped",
                                              {"interaction_id": "IVR-0001",
                                               "waited_seconds": 604})
    # the caller rings back: the IVR finds the service by contact key
    j.wait(minutes=14, seconds=31)
    resume = j.task("confirm-resume", queue, {"interaction_id": "IVR-0002",
                                              "found_by": "contact_key"})
    j.wait(seconds=20).end_task(resume, {"disposition": "confirmed",
                                         "disposition_desc": "calling back about the same request"})
    # an agent answers, identifies the caller and associates the service
    j.wait(minutes=3, seconds=47).associate(WIRELESS_CUSTOMER, {
        "interaction_id": "CALL-0002", "resource_type": "agent-desktop",
        "resource_id": 5005, "verified_by": "agent"})
    setup = j.transition(queue, {"state_type": "account-setup", "est_duration": 1800},
                         {"disposition": "answered"}, {"resource_id": 5005})
    j.wait(minutes=2).step("credit-check", setup, 1.5, end={
        "disposition": "approved", "credit": {"score_band": "A", "deposit": 0}})
    j.wait(minutes=1).step("choose-plan", setup, 6, end={
        "disposition": "chosen", "plan": _PLANS[2], "lines": 1})
    j.wait(minutes=1).step("port-number", setup, 4, {"from_carrier": "other"},
                           {"disposition": "scheduled"})
    j.wait(minutes=1).step("order-device", setup, 3, end={
        "disposition": "ordered", "device": "Pixel 8", "order_id": "WO-778102"})
    j.wait(minutes=1).end_state(setup, {"disposition": "done"})
    j.end({"disposition": 10, "disposition_desc": "account opened",
           "account": {"plan": "Unlimited Plus", "autopay": True}})

    # the new phone's delivery follows the call
    _delivery(w, WIRELESS_CUSTOMER, j.now + timedelta(minutes=2), "Pixel 8", "WO-778102")


def _hotel_booking(w: _World) -> None:
    start = w.day(16, 19, 22, 41)
    arrival = (start + timedelta(days=8)).date()
    departure = arrival + timedelta(days=4)
    web = {"media_type": "web", "session_id": "11000ABC-80236C1A-1010",
           "application_type": "web", "application_id": 41}
    j = w.journey(start, {"contact_key": "traveller0018@example.com",
                          "service_type": "hotel-reservation", **web, "est_duration": 86400,
                          "coupon": {"coupon_name": "DISCOUNTCODE15"}})
    collect = j.state("collect-search-information")
    j.wait(seconds=4).step("collect-time-information", collect, 0.8, end={
        "arrival": arrival.isoformat(), "departure": departure.isoformat(), "guests": 2})
    j.wait(seconds=10).step("collect-localisation-information", collect, 1.1, end={
        "destinations": ["Cancún, Mexico", "Paris, France"]})
    j.wait(seconds=10).step("collect-hotel-criteria", collect, 1.6, end={
        "criteria": {"stars": 4, "max_price": 250, "currency": "USD", "breakfast": True}})
    proposals = j.wait(seconds=5).transition(collect, {"state_type": "get-proposals"},
                                             {"disposition": "collected"})
    j.wait(seconds=2).step("search-offers", proposals, 0.2, end={"offers_found": 14})
    j.wait(seconds=3).step("propose-offers", proposals, 4, end={"offers": [
        {"place": "Terranova mexico resort", "nightly": 219, "rank": 1},
        {"place": "Fancy resort Paris", "nightly": 245, "rank": 2},
        {"place": "Hotel Playa Azul", "nightly": 180, "rank": 3}]})
    j.wait(seconds=30).step("get-detailed-information", proposals, 5, end={
        "offer": "Terranova mexico resort", "room": "ocean view double"})
    # the customer logs in to book: the service is theirs from now on
    j.wait(minutes=1).associate(HOTEL_CUSTOMER, {"interaction_id": "123ABCAADFJ1259ACF"})
    # the transition of the seed: Satisfaction on the state it completes, Sponsoring
    # on the one it starts
    validate = j.wait(seconds=40).transition(proposals, {
        "state_type": "validate-proposal", "est_duration": 500,
        "Sponsoring": {"Rank": "first", "expire": 7, "notes": "give customer free meal"}}, {
        "disposition": 1, "disposition_desc": "SUCCESS", "Satisfaction": [
            {"rating": 2, "pertinence": 8, "useful": True, "place": "Terranova mexico resort"},
            {"rating": 8, "pertinence": 4, "useful": False, "place": "Fancy resort Paris"}]},
        {"interaction_id": "123ABC908ABFFD8080"})
    j.wait(seconds=20).step("get-customer-approval", validate, 1.5, end={
        "disposition": "approved"})
    j.wait(seconds=15).step("make-payment", validate, 2, end={
        "disposition": "paid", "payment": {"method": "card", "amount": 745.20,
                                           "currency": "USD", "coupon": "DISCOUNTCODE15"}})
    j.wait(seconds=5).step("validate-reservation", validate, 0.3, end={
        "disposition": "confirmed", "reservation": "TMR-58213"})
    j.wait(seconds=5).step("send-bills-by-email", validate, 0.1, end={
        "disposition": "sent", "channel": "email"})
    # after the stay, the customer answers the survey
    j.at(datetime.combine(departure, datetime.min.time(), timezone.utc)
         + timedelta(days=1, hours=17, minutes=3))
    j.step("collect-customer-feedback", validate, 4, {"media_type": "email"}, {
        "Feedback": {"FeedbackType": "survey", "rating": 7,
                     "notes": "warm welcome at frontdesk, thanks for the nice trip"}})
    j.wait(seconds=1).end_state(validate, {"disposition": "done"})
    j.end({"disposition": 10, "disposition_desc": "booked", "resource_id": 5005})


def _waiting_caller(w: _World) -> None:
    j = w.journey(w.day(1, 21, 24, 9), {
        "contact_key": WAITING_CONTACT_KEY, "service_type": "billing-question", **w.ivr(),
        "ivr_path": ["main", "billing"]})
    menu = j.state("ivr-menu", {"menu": "main"})
    j.wait(seconds=9).step("identify-caller", menu, 0.6, {"method": "ani"},
                           {"disposition": "not-identified"})
    queue = j.wait(seconds=4).transition(menu, {"state_type": "agent-queue",
                                                "queue": "billing"},
                                         {"disposition": "routed"})
    j.wait(minutes=6, seconds=12).state_data(queue, "call_dropped", {"waited_seconds": 372})


# ---------------------------------------------------------------- everyday journeys
def _new_line(w: _World, cid: str, phone: str, at: datetime) -> None:
    j = w.journey(at, {"customer_id": cid, "contact_key": phone,
                       "service_type": "new-wireless-account", **w.ivr(),
                       "est_duration": 86400})
    menu = j.state("ivr-menu")
    j.wait(seconds=20).step("identify-caller", menu, 0.5, {"method": "account-number"},
                            {"disposition": "identified"})
    queue = j.wait(seconds=5).transition(menu, {"state_type": "agent-queue",
                                                "queue": "wireless-sales"})
    j.wait(minutes=w.rng.randrange(1, 15))
    desk = w.desk()
    setup = j.transition(queue, {"state_type": "account-setup"}, {"disposition": "answered"},
                         {"resource_id": desk["resource_id"]})
    plan = w.rng.choice(_PLANS)
    j.wait(minutes=1).step("credit-check", setup, 1, end={"disposition": "approved"})
    j.wait(minutes=1).step("choose-plan", setup, w.rng.randrange(3, 12), end={
        "disposition": "chosen", "plan": plan})
    if w.chance(0.25):
        j.wait(minutes=2).end_state(setup, {"disposition": "customer-will-think"})
        j.end({"disposition": 20, "disposition_desc": "no sale"})
        return
    device = w.rng.choice(_DEVICES)
    order = f"WO-{w.rng.randrange(100000, 1000000)}"
    j.wait(minutes=1).step("order-device", setup, 3, end={
        "disposition": "ordered", "device": device, "order_id": order})
    j.wait(minutes=1).end_state(setup, {"disposition": "done"})
    j.end({"disposition": 10, "disposition_desc": "account opened"})
    _delivery(w, cid, j.now + timedelta(minutes=5), device, order)


def _delivery(w: _World, cid: str, at: datetime, device: str, order: str) -> None:
    j = w.journey(at, {"customer_id": cid, "service_type": "device-delivery",
                       "media_type": "web", "application_type": "fulfilment",
                       "est_duration": 3 * 86400, "order_id": order, "items": [device]})
    placed = j.state("order-placed")
    j.wait(hours=w.rng.randrange(2, 20)).step("pick-and-pack", placed, 35, end={
        "disposition": "packed", "warehouse": "SJC-2"})
    carrier = w.rng.choice(_CARRIERS)
    shipped = j.wait(hours=w.rng.randrange(1, 6)).transition(placed, {
        "state_type": "shipped", "carrier": carrier,
        "tracking": f"{carrier[:2].upper()}{w.rng.randrange(10**9, 10**10)}"})
    if w.chance(0.1):
        # lost in transit: the case waits on the carrier
        j.wait(days=2).task("carrier-claim", shipped, {"reason": "no scan for 48h"})
        return
    j.wait(hours=w.rng.randrange(20, 60))
    out = j.transition(shipped, {"state_type": "out-for-delivery"})
    j.wait(hours=w.rng.randrange(2, 9)).step("signature", out, 1, end={
        "disposition": "signed", "signed_by": "customer"})
    j.end_state(out, {"disposition": "delivered"})
    j.end({"disposition": 10, "disposition_desc": "delivered"})


def _tech_support(w: _World, cid: str, phone: str, at: datetime) -> None:
    media = w.rng.choice(["voice", "voice", "chat"])
    start = w.ivr() if media == "voice" else {**w.web(), "media_type": "chat"}
    issue, text = w.rng.choice(_ISSUES)
    j = w.journey(at, {"customer_id": cid, "contact_key": phone, "service_type": "tech-support",
                       **start, "issue": {"code": issue, "text": text}})
    triage = j.state("triage")
    j.wait(minutes=1).step("check-coverage", triage, 1, {"zip_code": w.rng.choice(_ZIPS)},
                           {"disposition": w.rng.choice(["ok", "ok", "degraded"])})
    desk = w.desk(media)
    fixing = j.wait(minutes=w.rng.randrange(2, 20)).transition(
        triage, {"state_type": "troubleshooting"}, {"disposition": "answered"},
        {"resource_id": desk["resource_id"]})
    j.wait(minutes=2).step("reset-network-settings", fixing, 4, end={
        "disposition": w.rng.choice(["fixed", "not-fixed"])})
    if w.chance(0.5):
        j.wait(minutes=1).end_state(fixing, {"disposition": "fixed"})
        j.end({"disposition": 10, "disposition_desc": "resolved on first contact"})
        return
    ticket = f"TT-{w.rng.randrange(100000, 1000000)}"
    escalated = j.wait(minutes=3).transition(fixing, {"state_type": "escalated", "tier": 2,
                                                      "ticket": ticket},
                                             {"disposition": "escalated"})
    if w.chance(0.4):
        # waiting for a field technician: nothing happens for days
        j.wait(minutes=5).task("field-visit", escalated, {"ticket": ticket,
                                                          "window": "8am-12pm"})
        return
    j.wait(days=w.rng.randrange(1, 4), hours=w.rng.randrange(0, 8))
    j.step("replace-sim", escalated, 20, {"media_type": "voice"}, {"disposition": "done"})
    j.wait(minutes=1).end_state(escalated, {"disposition": "fixed"})
    j.end({"disposition": 10, "disposition_desc": "resolved after escalation"})


def _billing(w: _World, cid: str, phone: str, at: datetime) -> None:
    charge, amount = w.rng.choice(_CHARGES)
    media = w.rng.choice(["voice", "email", "chat"])
    start = w.ivr() if media == "voice" else {**w.web(), "media_type": media}
    j = w.journey(at, {"customer_id": cid, "contact_key": phone,
                       "service_type": "billing-dispute", **start,
                       "disputed": {"charge": charge, "amount": amount, "currency": "USD"}})
    review = j.state("review", w.desk(media))
    j.wait(minutes=2).step("explain-charges", review, 5, end={"disposition": "explained"})
    if media == "email" and w.chance(0.6):
        # the customer was asked for a receipt and has not sent it
        docs = j.wait(minutes=1).transition(review, {"state_type": "awaiting-documents",
                                                     "requested": ["receipt"]})
        if w.chance(0.5):
            return
        j.wait(days=w.rng.randrange(1, 6)).step("check-receipt", docs, 10,
                                                end={"disposition": "valid"})
        review = docs
    if w.chance(0.7):
        credit = round(amount * w.rng.choice([0.5, 1.0]), 2)
        adjust = j.wait(minutes=1).transition(review, {"state_type": "adjustment"})
        j.wait(minutes=1).step("issue-credit", adjust, 1, end={
            "disposition": "credited", "credit": {"amount": credit, "currency": "USD"}})
        j.end_state(adjust, {"disposition": "done"})
        j.end({"disposition": 10, "disposition_desc": "credit issued"})
    else:
        j.wait(minutes=1).end_state(review, {"disposition": "charge-valid"})
        j.end({"disposition": 30, "disposition_desc": "charge upheld"})


def _plan_change(w: _World, cid: str, phone: str, at: datetime) -> None:
    old, new = w.rng.sample(_PLANS, 2)
    if w.chance(0.4):
        # done in the app in one step: a service that starts completed
        w.journey(at, {"customer_id": cid, "service_type": "plan-change", "media_type": "app",
                       "application_type": "mobile-app", "auto_closed": True,
                       "from_plan": old["name"], "to_plan": new["name"]})
        return
    j = w.journey(at, {"customer_id": cid, "contact_key": phone, "service_type": "plan-change",
                       **w.web(), "media_type": "chat", "from_plan": old["name"]})
    chat = j.state("chat-session", w.desk("chat"))
    j.wait(minutes=1).step("explain-options", chat, w.rng.randrange(2, 9), end={
        "options": [p["name"] for p in _PLANS]})
    j.wait(minutes=1).step("apply-change", chat, 1, end={"disposition": "applied",
                                                         "to_plan": new["name"]})
    j.end_state(chat)
    j.end({"disposition": 10, "disposition_desc": "plan changed", "to_plan": new["name"]})


def _roaming(w: _World, cid: str, phone: str, at: datetime) -> None:
    pack = w.rng.choice([("Europe 7 days", 15), ("Mexico & Canada", 10), ("World 30 days", 50)])
    w.journey(at, {"customer_id": cid, "service_type": "roaming-pack", "media_type": "sms",
                   "application_type": "sms-bot", "auto_closed": True,
                   "pack": {"name": pack[0], "price": pack[1], "currency": "USD"}})


def _web_then_call(w: _World, cid: str, phone: str, at: datetime) -> None:
    """A visitor compares phones on the web without logging in, then calls: the agent
    finds the web visit by the e-mail address and associates it."""
    email = w.new_email()
    device = w.rng.choice(_DEVICES)
    web = w.journey(at, {"contact_key": email, "service_type": "upgrade-device", **w.web(),
                         "cart": {"items": [device], "trade_in": w.rng.choice(_DEVICES)}})
    browse = web.state("browse")
    web.wait(minutes=2).step("compare-devices", browse, 7, end={
        "compared": w.rng.sample(_DEVICES, 3)})
    web.wait(minutes=1).step("trade-in-quote", browse, 2, end={
        "quote": {"amount": w.rng.randrange(40, 400), "currency": "USD"}})
    checkout = web.wait(minutes=1).transition(browse, {"state_type": "checkout"})
    web.wait(minutes=3).state_data(checkout, "abandoned", {"step": "payment"})

    call = w.journey(web.now + timedelta(hours=w.rng.randrange(2, 30)), {
        "customer_id": cid, "contact_key": phone, "service_type": "upgrade-device",
        **w.ivr(), "reason": "question about the trade-in"})
    desk = w.desk()
    talk = call.state("agent-handling", desk)
    call.wait(minutes=2).step("find-web-visit", talk, 1, {"contact_key": email},
                              {"disposition": "found"})
    web.at(call.now).associate(cid, {"resource_type": "agent-desktop",
                                     "resource_id": desk["resource_id"]})
    order = f"WO-{w.rng.randrange(100000, 1000000)}"
    web.step("make-payment", checkout, 3, {"media_type": "voice"},
             {"disposition": "paid", "order_id": order})
    web.end_state(checkout, {"disposition": "done"})
    web.end({"disposition": 10, "disposition_desc": "completed with an agent"})
    call.at(web.now).end_state(talk, {"disposition": "done"})
    call.end({"disposition": 10, "disposition_desc": "web order completed"})
    _delivery(w, cid, call.now + timedelta(minutes=10), device, order)


def _self_service(w: _World, at: datetime, phone: str | None = None) -> None:
    kind = w.rng.choice([("store-hours", {"store": "San Jose Oakridge"}),
                         ("coverage-check", {"zip_code": w.rng.choice(_ZIPS)}),
                         ("payment-arrangement", {"days": 7})])
    w.journey(at, {"contact_key": phone or w.new_phone(), "service_type": kind[0],
                   **w.ivr(), "auto_closed": True, **kind[1]})


def _dropped_call(w: _World, at: datetime) -> None:
    j = w.journey(at, {"contact_key": w.new_phone(),
                       "service_type": w.rng.choice(["new-wireless-account", "tech-support",
                                                     "billing-question"]), **w.ivr()})
    menu = j.state("ivr-menu")
    j.wait(seconds=10).step("identify-caller", menu, 0.5, end={"disposition": "not-identified"})
    queue = j.wait(seconds=5).transition(menu, {"state_type": "agent-queue"})
    j.wait(minutes=w.rng.randrange(2, 15)).state_data(queue, "call_dropped", {})
    if w.chance(0.4):
        # the caller gave up: the IVR closes it the next day
        j.wait(days=1).end_state(queue, {"disposition": "abandoned"})
        j.end({"disposition": 40, "disposition_desc": "abandoned"})


def _web_browse(w: _World, at: datetime) -> None:
    j = w.journey(at, {"contact_key": w.new_email(), "service_type": "upgrade-device",
                       **w.web()})
    browse = j.state("browse")
    j.wait(minutes=1).step("compare-devices", browse, w.rng.randrange(2, 15), end={
        "compared": w.rng.sample(_DEVICES, 2)})
    if w.chance(0.5):
        j.end_state(browse, {"disposition": "left"})
        j.end({"disposition": 40, "disposition_desc": "left the site"})


_KINDS: list[tuple[Callable[[_World, str, str, datetime], None], int]] = [
    (_new_line, 3), (_tech_support, 4), (_billing, 4), (_plan_change, 3), (_roaming, 2),
    (_web_then_call, 2)]
_CUSTOMER_JOURNEYS = [kind for kind, _ in _KINDS]
