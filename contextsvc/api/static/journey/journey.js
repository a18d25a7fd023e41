// The journey page: reads the public JSON API of the service that served it (the
// same prefix, so the same answers an app gets) and draws each service on one time
// axis: its bar, its states as segments, its tasks as marks. Plain DOM, no library.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const config = $("#config");
  const API = config.dataset.api; // "" or "/genesys/1/cs": the page's own prefix
  const FIELDS = Object.fromEntries(
    Object.entries(JSON.parse(config.dataset.fields)).map(([k, v]) => [k, new Set(v)]));
  const KEY_STORE = "contextsvc.apiKey";
  const NESTED = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true";
  const SECOND = 1e3, MINUTE = 60e3, HOUR = 3600e3, DAY = 86400e3;
  const STATUS = {active: "Active", completed: "Completed", auto: "Auto-completed"};
  const KIND = {service: "Service", state: "State", task: "Task"};
  const LOOKUP = {customer_id: "Customer id", contact_key: "Contact key"};

  const form = $("#lookup"), query = $("#q"), which = $("#which");
  const keyForm = $("#key-form"), keyInput = $("#key");
  const message = $("#message"), section = $("#journey"), timeline = $("#timeline");
  const details = $("#details"), detailsBody = $("#details-body");

  let current = null; // the lookup shown: {by, q, which}
  let journey = null; // {services: [...], items: Map(ref -> item), extent: [from, to]}
  let view = null; // the time range on screen: {from, to} (ms)
  let selected = null; // ref of the item whose details are open
  let opener = null; // ref of the element that opened them, for focus on close
  let asked = 0; // lookups started, so that a late answer never replaces a newer one

  // ------------------------------------------------------------------ DOM helper
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // ------------------------------------------------------------------ formatting
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const fmt = (options) => new Intl.DateTimeFormat(undefined, options);
  const F = {
    full: fmt({weekday: "short", year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit"}),
    short: fmt({month: "short", day: "numeric", hour: "numeric", minute: "2-digit"}),
    time: fmt({hour: "numeric", minute: "2-digit"}),
    day: fmt({weekday: "short", month: "short", day: "numeric"}),
    dayOnly: fmt({weekday: "short", day: "numeric"}),
    month: fmt({month: "short", year: "numeric"}),
    monthOnly: fmt({month: "short"}),
    year: fmt({year: "numeric"}),
  };
  const sameDay = (a, b) => new Date(a).toDateString() === new Date(b).toDateString();

  function duration(ms) {
    if (ms > 0 && ms < SECOND) return `${Math.round(ms)} ms`;
    const s = Math.round(ms / SECOND);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
    const hours = Math.floor(m / 60);
    if (hours < 24) return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
    const d = Math.floor(hours / 24);
    return hours % 24 ? `${d} d ${hours % 24} h` : `${d} d`;
  }

  function span(item) {
    const start = F.short.format(item.start);
    if (item.status === "active") return `${start} → now`;
    const end = sameDay(item.start, item.end) ? F.time.format(item.end) : F.short.format(item.end);
    return `${start} → ${end}`;
  }

  const typeName = (item) => (item.type === undefined ? `(no ${item.kind} type)` : String(item.type));

  // ------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(kind, status, body, extra) {
      super((body && body.message) || `status ${status}`);
      Object.assign(this, {kind, status, body}, extra);
    }
  }

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE); } catch { return null; }
  }

  function lookupPath(lookup) {
    const value = encodeURIComponent(lookup.q);
    const path = lookup.by === "customer_id" ? `/customers/${value}/services`
      : `/services/anonymous/${value}`;
    return `${API}${path}${lookup.which ? `/${lookup.which}` : ""}?${NESTED}`;
  }

  async function getServices(url, tenant) {
    const headers = {Accept: "application/json"};
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (tenant) headers.ContactCenterId = tenant; // API.md 8.2
    let response;
    try {
      response = await fetch(url, {headers, cache: "no-store", credentials: "same-origin"});
    } catch (err) {
      throw new ApiError("network", 0, {message: String(err && err.message || err)});
    }
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    if (response.ok && Array.isArray(body)) return body;
    const challenge = response.headers.get("WWW-Authenticate") || "";
    const kind = response.status === 401 && /\bBearer\b/i.test(challenge) ? "auth"
      : response.ok ? "answer" : "http";
    throw new ApiError(kind, response.status, body,
      {hadKey: Boolean(key), retryAfter: response.headers.get("Retry-After")});
  }

  // ------------------------------------------------------------------ the model
  function statusOf(raw) {
    if (!raw.completed) return "active";
    return raw.completed.auto_completed === true ? "auto" : "completed";
  }

  function item(kind, raw, service, now) {
    const start = Date.parse(raw.started && raw.started.timestamp);
    const end = raw.completed ? Date.parse(raw.completed.timestamp) : null;
    const id = raw[`${kind}_id`];
    const ref = kind === "service" ? `service-${id}` : `service-${service.id}-${kind}-${id}`;
    const status = statusOf(raw);
    // a completion stamped before its start is accepted by the API: draw it as an instant
    const drawEnd = end === null ? Math.max(now, start) : Math.max(end, start);
    return {kind, raw, id, ref, status, service, start, end: end === null ? null : drawEnd,
      drawEnd, type: raw[`${kind}_type`]};
  }

  // Items in start order get the first lane where the previous one has ended.
  function lanes(items) {
    const ends = [];
    for (const it of items) {
      let lane = ends.findIndex((end) => end <= it.start);
      if (lane < 0) { lane = ends.length; ends.push(0); }
      ends[lane] = Math.max(it.drawEnd, it.start + 1);
      it.lane = lane;
    }
    return ends.length;
  }

  function build(services) {
    const now = Date.now();
    const items = new Map();
    const byStart = (a, b) => a.start - b.start || a.id - b.id;
    const list = services.map((raw) => {
      const svc = item("service", raw, null, now);
      svc.states = [...(raw.active_states || []), ...(raw.completed_states || [])]
        .map((s) => item("state", s, svc, now)).sort(byStart);
      svc.tasks = [...(raw.active_tasks || []), ...(raw.completed_tasks || [])]
        .map((t) => item("task", t, svc, now)).sort(byStart);
      svc.stateLanes = lanes(svc.states);
      svc.taskLanes = lanes(svc.tasks);
      for (const it of [svc, ...svc.states, ...svc.tasks]) items.set(it.ref, it);
      return svc;
    });
    const all = [...items.values()].filter((it) => Number.isFinite(it.start));
    const from = Math.min(...all.map((it) => it.start));
    const to = Math.max(...all.map((it) => it.drawEnd));
    return {services: list, items, extent: [from, to], now};
  }

  // ------------------------------------------------------------------ lookups
  // the contact center (tenant), asked only of a service that has tenants
  const tenantInput = $("#tenant");

  function readForm() {
    const by = form.elements.by.value;
    return {by, q: query.value.trim(), which: which.value,
      tenant: tenantInput ? tenantInput.value.trim() : ""};
  }

  function fillForm(lookup) {
    form.elements.by.value = lookup.by;
    query.value = lookup.q;
    which.value = lookup.which || "";
    if (tenantInput) tenantInput.value = lookup.tenant || "";
    labelQuery();
  }

  function labelQuery() {
    $("#q-label").textContent = LOOKUP[form.elements.by.value];
  }

  function pageUrl(lookup) {
    const params = new URLSearchParams({[lookup.by]: lookup.q});
    if (lookup.which) params.set("services", lookup.which);
    if (lookup.tenant) params.set("tenant", lookup.tenant);
    return `${location.pathname}?${params}`;
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    const which = ["active", "completed"].includes(params.get("services"))
      ? params.get("services") : "";
    const tenant = tenantInput ? (params.get("tenant") || "").trim() : "";
    for (const by of ["customer_id", "contact_key"]) {
      const q = (params.get(by) || "").trim();
      if (q) return {by, q, which, tenant};
    }
    return null;
  }

  function say(kind, title, ...lines) {
    message.className = `message ${kind || ""}`;
    message.setAttribute("role", kind === "error" ? "alert" : "status");
    message.replaceChildren(...(title ? [title] : []),
      ...lines.filter(Boolean).map((line) => h("p", null, line)));
  }

  async function show(lookup) {
    current = lookup;
    const mine = ++asked;
    keyForm.hidden = true;
    if (lookup.q === "." || lookup.q === ".." || lookup.q.includes("/")) {
      section.hidden = true;
      closeDetails(false);
      say("error", `${LOOKUP[lookup.by]} “${lookup.q}” cannot be looked up.`,
        "The API names it in the path of its address, where “/” (or a name made of dots " +
        "only) means something else.");
      return;
    }
    say("", `Loading the services of ${LOOKUP[lookup.by].toLowerCase()} “${lookup.q}”…`);
    const url = lookupPath(lookup);
    let services;
    try {
      services = await getServices(url, lookup.tenant);
    } catch (err) {
      if (mine === asked) failed(err, lookup);
      return;
    }
    if (mine !== asked) return;
    updateKeyNote();
    $("#request").textContent = `GET ${url}`;
    if (!services.length) {
      section.hidden = true;
      closeDetails(false);
      journey = null;
      say("empty", ...emptyText(lookup));
      return;
    }
    journey = build(services);
    const counts = {active: 0, completed: 0, auto: 0};
    for (const svc of journey.services) counts[svc.status] += 1;
    const parts = Object.entries(counts).filter(([, n]) => n)
      .map(([status, n]) => `${n} ${STATUS[status].toLowerCase()}`);
    const n = journey.services.length;
    $("#journey-title").textContent = lookup.by === "customer_id"
      ? `Customer ${lookup.q}` : `Contact key ${lookup.q} (not identified)`;
    say("", `${n} service${n === 1 ? "" : "s"}: ${parts.join(", ")}.`);
    section.hidden = false;
    const keep = selected && journey.items.has(selected) ? selected : null;
    fit();
    if (keep) openDetails(keep, {focus: false});
    else closeDetails(false);
  }

  function emptyText(lookup) {
    const what = lookup.which ? `${lookup.which} services` : "services";
    if (lookup.by === "customer_id") {
      return [`No ${what} for customer id “${lookup.q}”.`,
        lookup.which ? "The customer may have others: choose “active and completed”."
          : "No service is associated with this id: it is unknown here, or its services " +
            "were deleted or have expired.",
        "A service started with a contact key only is found by that contact key until " +
        "it is associated with a customer."];
    }
    return [`No anonymous ${what} with contact key “${lookup.q}”.`,
      "A contact key finds only the services nobody has identified yet: once a service " +
      "is associated with a customer, look it up by customer id."];
  }

  function failed(err, lookup) {
    section.hidden = true;
    closeDetails(false);
    const told = err.body && err.body.message ? `The service said: “${err.body.message}”` : null;
    if (err.kind === "auth") {
      message.replaceChildren();
      message.className = "message";
      askForKey(err.hadKey);
      return;
    }
    if (err.kind === "network") {
      say("error", "The service could not be reached.",
        `${location.origin} did not answer (${err.body.message}). Is it running?`);
    } else if (err.status === 403) {
      say("error", "This API key may not read these services (403).", told,
        "Use a key with the read role (and, with tenants, one allowed for this tenant).",
        storedKey() ? forgetButton() : null);
    } else if (err.status === 503) {
      say("error", "The service is busy or cannot read its store right now (503).", told,
        `Try again${err.retryAfter ? ` in ${err.retryAfter} s` : " in a moment"}.`);
    } else if (err.status === 400 && err.body && err.body.exception === "InvalidTenantException") {
      say("error", lookup.tenant ? `This service has no contact center “${lookup.tenant}” (400).`
        : "This service has several contact centers: enter one (400).", told);
      if (tenantInput) tenantInput.focus();
    } else if (err.status === 400) {
      say("error", `The service refused the lookup of ${LOOKUP[lookup.by].toLowerCase()} ` +
        `“${lookup.q}” (400).`, told);
    } else if (err.kind === "answer") {
      say("error", `The service answered ${err.status}, but not with a list of services.`);
    } else {
      say("error", `The lookup failed with status ${err.status}` +
        `${err.body && err.body.exception ? ` (${err.body.exception})` : ""}.`, told);
    }
  }

  // ------------------------------------------------------------------ API keys
  function askForKey(refused) {
    try { if (refused) sessionStorage.removeItem(KEY_STORE); } catch { /* private mode */ }
    updateKeyNote();
    $("#key-why").textContent = refused
      ? "The service refused this key (401). Enter another API key to read services."
      : "This service asks for an API key to read services (401). Enter a key with the " +
        "read role.";
    keyInput.value = "";
    keyForm.hidden = false;
    keyInput.focus();
  }

  function forgetButton() {
    return h("button", {type: "button", class: "link", onclick: forgetKey}, "Forget the key");
  }

  function forgetKey() {
    try { sessionStorage.removeItem(KEY_STORE); } catch { /* nothing kept */ }
    updateKeyNote();
    say("", "The API key is forgotten: the next lookup is sent without one.");
  }

  function updateKeyNote() {
    $("#key-note").hidden = !storedKey();
  }

  // ------------------------------------------------------------------ the time axis
  const STEPS = [
    ["minute", 1], ["minute", 2], ["minute", 5], ["minute", 10], ["minute", 15],
    ["minute", 30], ["hour", 1], ["hour", 2], ["hour", 3], ["hour", 6], ["hour", 12],
    ["day", 1], ["day", 2], ["week", 1], ["week", 2], ["month", 1], ["month", 3],
    ["month", 6], ["year", 1],
  ].map(([unit, n]) => ({unit, n,
    ms: n * {minute: MINUTE, hour: HOUR, day: DAY, week: 7 * DAY, month: 30 * DAY,
      year: 365 * DAY}[unit]}));

  function ticks(from, to, width) {
    // a time of day takes more room than a day's label
    const most = (s) => Math.max(2, Math.floor(width / (s.ms < DAY ? 88 : 60)));
    const step = STEPS.find((s) => (to - from) / s.ms <= most(s)) || STEPS[STEPS.length - 1];
    const d = new Date(from);
    const {unit, n} = step;
    if (unit === "minute") {
      d.setSeconds(0, 0);
      d.setMinutes(Math.floor(d.getMinutes() / n) * n);
    } else if (unit === "hour") {
      d.setMinutes(0, 0, 0);
      d.setHours(Math.floor(d.getHours() / n) * n);
    } else {
      d.setHours(0, 0, 0, 0);
      if (unit === "day") d.setDate(Math.floor((d.getDate() - 1) / n) * n + 1);
      if (unit === "week") d.setDate(d.getDate() - ((d.getDay() + 6) % 7)); // Mondays
      if (unit === "month") { d.setDate(1); d.setMonth(Math.floor(d.getMonth() / n) * n); }
      if (unit === "year") { d.setDate(1); d.setMonth(0); }
    }
    const out = [];
    for (let i = 0; i < 400 && d.getTime() <= to; i++) {
      if (d.getTime() >= from) out.push(d.getTime());
      if (unit === "minute") d.setMinutes(d.getMinutes() + n);
      else if (unit === "hour") d.setHours(d.getHours() + n);
      else if (unit === "day") d.setDate(d.getDate() + n);
      else if (unit === "week") d.setDate(d.getDate() + 7 * n);
      else if (unit === "month") d.setMonth(d.getMonth() + n);
      else d.setFullYear(d.getFullYear() + 1);
    }
    return {step, ticks: out};
  }

  // The label of each tick, and above it what changed since the last one (the day,
  // the month, the year), so that a narrow range still says which day it shows.
  function tickLabels(step, times) {
    let last = null;
    return times.map((t) => {
      const d = new Date(t);
      let main, context, key;
      if (step.unit === "minute" || step.unit === "hour") {
        main = F.time.format(d); key = d.toDateString(); context = F.day.format(d);
      } else if (step.unit === "day" || step.unit === "week") {
        main = F.dayOnly.format(d); key = `${d.getFullYear()}-${d.getMonth()}`;
        context = F.month.format(d);
      } else if (step.unit === "month") {
        main = F.monthOnly.format(d); key = String(d.getFullYear()); context = key;
      } else {
        main = F.year.format(d); key = main; context = "";
      }
      const shown = key !== last ? context : "";
      last = key;
      return {t, main, context: shown};
    });
  }

  const MIN_SPAN = MINUTE, MAX_SPAN = 20 * 365 * DAY;

  function setView(from, to) {
    let width = Math.min(Math.max(to - from, MIN_SPAN), MAX_SPAN);
    const centre = (from + to) / 2;
    view = {from: centre - width / 2, to: centre + width / 2};
    render();
  }

  function fitRange(from, to, padding) {
    const width = Math.max(to - from, 10 * MINUTE);
    const pad = width * padding;
    const centre = (from + to) / 2;
    setView(centre - width / 2 - pad, centre + width / 2 + pad);
  }

  function fit() {
    fitRange(journey.extent[0], journey.extent[1], 0.03);
  }

  function zoom(factor, at) {
    const centre = at === undefined ? (view.from + view.to) / 2 : at;
    setView(centre - (centre - view.from) * factor, centre + (view.to - centre) * factor);
  }

  function pan(fraction) {
    const shift = (view.to - view.from) * fraction;
    setView(view.from + shift, view.to + shift);
  }

  // ------------------------------------------------------------------ drawing
  const pct = (x) => `${(x * 100).toFixed(4)}%`;

  // Where [start, end] falls in the view, as fractions of its width, cut to it;
  // null when it is outside.
  function within(start, end) {
    const width = view.to - view.from;
    const a = (start - view.from) / width, b = (end - view.from) / width;
    if (b < 0 || a > 1) return null;
    return {a: Math.max(a, 0), b: Math.min(b, 1), cutStart: a < 0, cutEnd: b > 1};
  }

  function describe(it) {
    const whose = it.kind === "service" ? "" : ` of service ${it.service.id}`;
    const time = it.status === "active" ? `started ${F.full.format(it.start)}, active`
      : `${F.full.format(it.start)} to ${F.full.format(it.end)}, ${duration(it.end - it.start)}`;
    return `${KIND[it.kind]} ${typeName(it)} (${it.kind} ${it.id}${whose}), ` +
      `${STATUS[it.status].toLowerCase()}, ${time}`;
  }

  function itemButton(it, cls, content) {
    return h("button", {type: "button", class: `${cls} ${it.status}`, "data-ref": it.ref,
      "data-kind": it.kind, "data-status": it.status, "aria-label": describe(it),
      title: describe(it), "aria-haspopup": "dialog"}, content);
  }

  const BAR = 10, GAP = 6, STATE_H = 24, STATE_GAP = 4, TASK_H = 20, TASK_GAP = 2;

  function drawService(svc) {
    const head = h("button", {type: "button", class: "svc", "data-ref": svc.ref,
      "data-kind": "service", "data-status": svc.status, "aria-label": describe(svc),
      "aria-haspopup": "dialog"},
    h("span", {class: "svc-name"}, typeName(svc)),
    h("span", {class: `badge ${svc.status}`}, STATUS[svc.status]),
    h("span", {class: "svc-meta"}, `#${svc.id} · ${span(svc)}` +
      (svc.status === "active" ? "" : ` · ${duration(svc.end - svc.start)}`) +
      ` · ${svc.states.length} state${svc.states.length === 1 ? "" : "s"}, ` +
      `${svc.tasks.length} task${svc.tasks.length === 1 ? "" : "s"}`));
    const track = h("div", {class: "track"});
    const bar = within(svc.start, svc.drawEnd);
    const row = h("li", {class: "row", "data-service": svc.id}, head, track);
    if (!bar) { // nothing of it in view: one line that says where it is
      const later = svc.start > view.to;
      track.append(h("span", {class: `off ${later ? "later" : "earlier"}`},
        later ? `later: ${F.short.format(svc.start)} ▶` : `◀ earlier: ${span(svc)}`));
      track.style.height = "1.2rem";
      return row;
    }
    const el = h("div", {class: `bar ${svc.status}`, "data-ref": svc.ref, "aria-hidden": "true"});
    Object.assign(el.style, {left: pct(bar.a), width: pct(bar.b - bar.a)});
    track.append(el);
    let top = BAR + GAP;
    for (const st of svc.states) {
      const at = within(st.start, st.drawEnd);
      if (!at) continue;
      const el = itemButton(st, "seg", typeName(st));
      el.classList.toggle("cut-start", at.cutStart);
      el.classList.toggle("cut-end", at.cutEnd);
      Object.assign(el.style, {left: pct(at.a), width: pct(at.b - at.a),
        top: `${top + st.lane * (STATE_H + STATE_GAP)}px`});
      track.append(el);
    }
    if (svc.states.length) top += svc.stateLanes * (STATE_H + STATE_GAP);
    for (const task of svc.tasks) {
      const at = within(task.start, task.drawEnd);
      if (!at) continue;
      const el = itemButton(task, "task", h("span", {class: `shape ${task.status}`}));
      el.classList.toggle("cut-start", at.cutStart);
      Object.assign(el.style, {left: `calc(${pct(at.a)} - 12px)`,
        width: `calc(${pct(at.b - at.a)} + 24px)`,
        top: `${top + task.lane * (TASK_H + TASK_GAP)}px`});
      track.append(el);
    }
    if (svc.tasks.length) top += svc.taskLanes * (TASK_H + TASK_GAP);
    track.style.height = `${top}px`;
    return row;
  }

  function render() {
    if (!journey || !view) return;
    const focused = document.activeElement && timeline.contains(document.activeElement)
      ? document.activeElement.dataset.ref : null;
    const plot = timeline.querySelector(".plot") || timeline.appendChild(
      h("div", {class: "plot"}));
    const width = plot.clientWidth || timeline.clientWidth || 800;
    const {step, ticks: times} = ticks(view.from, view.to, width);
    const x = (t) => (t - view.from) / (view.to - view.from);
    const grid = h("div", {class: "grid", "aria-hidden": "true"},
      times.map((t) => { const l = h("div", {class: "line"}); l.style.left = pct(x(t)); return l; }));
    const axis = h("div", {class: "axis-inner"},
      tickLabels(step, times).filter(({t}) => x(t) * width < width - 56).map(
        ({t, main, context}) => {
          const el = h("div", {class: "tick"}, h("span", {class: "context"}, context), main);
          el.style.left = pct(x(t));
          return el;
        }));
    const now = Date.now();
    if (now >= view.from && now <= view.to) {
      const line = h("div", {class: "now"});
      line.style.left = pct(x(now));
      grid.append(line);
      const label = h("span", {class: "now-label"}, "now");
      label.style.left = pct(x(now));
      axis.append(label);
    }
    const rows = h("ol", {class: "rows", "aria-label": "Services, oldest first"},
      journey.services.map(drawService));
    plot.replaceChildren(grid, h("div", {class: "axis", "aria-hidden": "true"}, axis), rows);
    $("#range").textContent = `${F.short.format(view.from)} – ${F.short.format(view.to)} ` +
      `(${duration(view.to - view.from)} shown; times in ${zone})`;
    if (selected) markSelected();
    if (focused) {
      const again = plot.querySelector(`[data-ref="${focused}"]:not(.bar)`);
      if (again) again.focus({preventScroll: true});
    }
  }

  function markSelected() {
    for (const el of timeline.querySelectorAll(".selected")) el.classList.remove("selected");
    for (const el of timeline.querySelectorAll(`[data-ref="${selected}"]`)) {
      el.classList.add("selected");
    }
  }

  // ------------------------------------------------------------------ details
  function value(v) {
    if (typeof v === "string") return v;
    return h("pre", null, JSON.stringify(v, null, 2));
  }

  function stamp(ts) {
    const t = Date.parse(ts);
    return Number.isFinite(t) ? [F.full.format(t), h("span", {class: "raw"}, ts)] : [ts];
  }

  function list(entries) {
    return h("dl", null, entries.filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
  }

  function eventList(event) {
    return list(Object.entries(event).map(([k, v]) => [h("code", null, k),
      k === "timestamp" ? stamp(v) : value(v)]));
  }

  function refButton(it) {
    return h("button", {type: "button", class: "ref", "data-open": it.ref},
      h("span", {class: `badge ${it.status}`}, STATUS[it.status]),
      `${KIND[it.kind]} ${it.id}: ${typeName(it)}`,
      h("span", {class: "svc-meta"}, span(it)));
  }

  function openDetails(ref, {focus = true, from = null} = {}) {
    const it = journey && journey.items.get(ref);
    if (!it) return;
    selected = ref;
    if (from) opener = from;
    const raw = it.raw;
    const svc = it.service || it;
    const find = (kind, id) => journey.items.get(`service-${svc.id}-${kind}-${id}`);
    const own = FIELDS[it.kind];
    const data = Object.entries(raw).filter(([k]) => !own.has(k));
    const facts = [
      ["Status", h("span", {class: `badge ${it.status}`}, STATUS[it.status])],
      [`${KIND[it.kind]} type`, raw[`${it.kind}_type`] === undefined ? "none"
        : String(raw[`${it.kind}_type`])],
    ];
    if (it.kind === "service") {
      facts.push(["Customer id", raw.customer_id || "none (anonymous)"],
        ["Contact key", raw.contact_key]);
    } else {
      facts.push(["Service", refButton(svc)]);
    }
    if (it.kind === "state" && raw.previous_state_id !== undefined) {
      const prev = find("state", raw.previous_state_id);
      facts.push(["Previous state", prev ? refButton(prev) : String(raw.previous_state_id)]);
    }
    if (it.kind === "task" && raw.state_id !== undefined) {
      const state = find("state", raw.state_id);
      facts.push(["State", state ? refButton(state) : String(raw.state_id)]);
    }
    facts.push(
      ["When", raw.completed ? `${span(it)} (${duration(raw.duration ?? it.end - it.start)})`
        : `${span(it)} (active for ${duration(Math.max(Date.now() - it.start, 0))})`],
      ["Estimated duration", raw.est_duration === undefined ? undefined
        : duration(raw.est_duration * SECOND)],
      ["Disposition", raw.disposition === undefined ? undefined : String(raw.disposition)],
      ["Disposition description", raw.disposition_desc],
      ["Completes by itself at", raw.auto_complete_at && stamp(raw.auto_complete_at)],
      ["Expires at", raw.expiration_time && stamp(raw.expiration_time)]);
    const whose = it.kind === "service" ? "" : ` · service ${svc.id}`;
    $("#details-title").textContent = `${KIND[it.kind]} ${it.id}: ${typeName(it)}${whose}`;
    const shown = Object.fromEntries(Object.entries(raw).filter(
      ([k]) => !/^(active|completed)_(states|tasks)$/.test(k)));
    const children = it.kind === "service" ? [
      h("h3", null, `States (${it.states.length})`),
      it.states.length ? h("ul", {class: "refs"}, it.states.map((s) => h("li", null, refButton(s))))
        : h("p", {class: "none"}, "No states."),
      h("h3", null, `Tasks (${it.tasks.length})`),
      it.tasks.length ? h("ul", {class: "refs"}, it.tasks.map((t) => h("li", null, refButton(t))))
        : h("p", {class: "none"}, "No tasks."),
    ] : [];
    detailsBody.replaceChildren(
      h("div", {class: "actions"},
        h("button", {type: "button", "data-zoom": ref}, "Zoom the axis to it")),
      list(facts),
      h("h3", null, `Attached data (${data.length})`),
      data.length ? h("dl", {class: "data"}, data.map(([k, v]) =>
        [h("dt", null, h("code", null, k)), h("dd", null, value(v))]))
        : h("p", {class: "none"}, "No attached data."),
      h("h3", null, "Start event"), eventList(raw.started),
      h("h3", null, "Completion event"),
      raw.completed ? eventList(raw.completed) : h("p", {class: "none"}, "Not completed yet."),
      ...children,
      h("details", null, h("summary", null, "As the API returned it"),
        h("pre", null, JSON.stringify(shown, null, 2)),
        it.kind === "service" ? h("p", {class: "none"},
          "Its states and tasks are nested in the same answer; open them on their own.")
          : null));
    details.hidden = false;
    $(".layout").classList.add("with-details");
    render();
    if (focus) {
      details.focus({preventScroll: true});
      details.scrollIntoView({block: "nearest"});
    }
  }

  function closeDetails(restore = true) {
    const back = opener;
    details.hidden = true;
    $(".layout").classList.remove("with-details");
    selected = null;
    opener = null;
    for (const el of timeline.querySelectorAll(".selected")) el.classList.remove("selected");
    if (journey && view) render();
    if (restore && back) {
      const el = timeline.querySelector(`[data-ref="${back}"]:not(.bar)`);
      if (el) el.focus();
    }
  }

  // ------------------------------------------------------------------ events
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const lookup = readForm();
    if (!lookup.q) return;
    history.pushState(lookup, "", pageUrl(lookup));
    show(lookup);
  });
  form.addEventListener("change", (event) => {
    if (event.target.name === "by") labelQuery();
  });
  window.addEventListener("popstate", () => {
    const lookup = fromUrl();
    if (lookup) { fillForm(lookup); show(lookup); }
  });

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) return;
    try { sessionStorage.setItem(KEY_STORE, key); } catch { /* kept for nothing */ }
    keyInput.value = "";
    keyForm.hidden = true;
    updateKeyNote();
    if (current) show(current);
  });
  $("#forget-key").addEventListener("click", forgetKey);

  section.querySelector(".toolbar").addEventListener("click", (event) => {
    const button = event.target.closest("[data-view]");
    if (!button || !view) return;
    const action = button.dataset.view;
    if (action === "in") zoom(0.5);
    else if (action === "out") zoom(2);
    else if (action === "fit") fit();
    else if (action === "earlier") pan(-0.5);
    else if (action === "later") pan(0.5);
  });

  // Selecting: a click (or Enter / Space on a focused button) on anything that
  // names a service, state or task opens its details.
  let dragged = false;
  timeline.addEventListener("click", (event) => {
    if (dragged) { dragged = false; return; }
    const el = event.target.closest("[data-ref]");
    if (el) openDetails(el.dataset.ref, {from: el.dataset.ref});
  });
  details.addEventListener("click", (event) => {
    const open = event.target.closest("[data-open]");
    if (open) { openDetails(open.dataset.open, {focus: true}); return; }
    const zoomTo = event.target.closest("[data-zoom]");
    if (zoomTo) {
      const it = journey.items.get(zoomTo.dataset.zoom);
      fitRange(it.start, it.drawEnd, 0.15);
    }
  });
  $("#close-details").addEventListener("click", () => closeDetails(true));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !details.hidden) closeDetails(true);
  });
  timeline.addEventListener("keydown", (event) => {
    if (!view || event.altKey || event.ctrlKey || event.metaKey) return;
    const actions = {"+": () => zoom(0.5), "=": () => zoom(0.5), "-": () => zoom(2),
      "0": fit};
    if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
  });

  // Dragging the timeline moves the time axis; ctrl + wheel (a pinch on a touchpad) zooms.
  let drag = null, frame = 0;
  timeline.addEventListener("pointerdown", (event) => {
    dragged = false;
    if (!view || event.button !== 0) return;
    drag = {x: event.clientX, from: view.from, to: view.to, moved: false, id: event.pointerId};
  });
  timeline.addEventListener("pointermove", (event) => {
    if (!drag || event.pointerId !== drag.id) return;
    const dx = event.clientX - drag.x;
    if (!drag.moved && Math.abs(dx) < 5) return;
    if (!drag.moved) {
      drag.moved = true;
      timeline.setPointerCapture(event.pointerId);
      timeline.classList.add("dragging");
    }
    const width = timeline.querySelector(".plot").clientWidth || 1;
    const shift = -dx / width * (drag.to - drag.from);
    view = {from: drag.from + shift, to: drag.to + shift};
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
  });
  const endDrag = () => {
    if (drag && drag.moved) dragged = true;
    drag = null;
    timeline.classList.remove("dragging");
  };
  timeline.addEventListener("pointerup", endDrag);
  timeline.addEventListener("pointercancel", endDrag);
  timeline.addEventListener("wheel", (event) => {
    if (!view) return;
    const plot = timeline.querySelector(".plot");
    const box = plot.getBoundingClientRect();
    if (event.ctrlKey) {
      event.preventDefault();
      const at = view.from + (event.clientX - box.left) / box.width * (view.to - view.from);
      zoom(event.deltaY > 0 ? 1.25 : 0.8, at);
    } else if (Math.abs(event.deltaX) > Math.abs(event.deltaY)) {
      event.preventDefault();
      pan(event.deltaX / box.width);
    }
  }, {passive: false});

  const info = $("#focus-info");
  const tell = (event) => {
    const el = event.target.closest && event.target.closest("[data-ref]");
    const it = el && journey && journey.items.get(el.dataset.ref);
    info.textContent = it ? describe(it) : "";
  };
  timeline.addEventListener("focusin", tell);
  timeline.addEventListener("mouseover", tell);
  timeline.addEventListener("focusout", () => { info.textContent = ""; });
  timeline.addEventListener("mouseleave", () => {
    const el = document.activeElement;
    info.textContent = timeline.contains(el) && el.dataset.ref && journey.items.get(el.dataset.ref)
      ? describe(journey.items.get(el.dataset.ref)) : "";
  });

  let drawnWidth = 0;
  new ResizeObserver(() => {
    if (timeline.clientWidth !== drawnWidth) { drawnWidth = timeline.clientWidth; render(); }
  }).observe(timeline);

  // ------------------------------------------------------------------ start
  updateKeyNote();
  const first = fromUrl();
  if (first) {
    fillForm(first);
    history.replaceState(first, "", pageUrl(first));
    show(first);
  } else {
    labelQuery();
    query.focus();
  }
})();
