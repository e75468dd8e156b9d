// VOCA Box's page. Plain JavaScript, no libraries: everything comes from the box. Text from the
// box (names, transcripts) is always set with textContent, never parsed as HTML.
"use strict";

const state = { csrf: null, status: null, events: null, page: null, selected: null };
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function toast(message) {
  const t = $("#toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.field = body.field;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  if (response.status === 401 && !path.startsWith("/api/login") && !path.startsWith("/api/session")) {
    state.csrf = null;
    route();
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showError(form, error) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  const input = error.field && form.querySelector(`[name="${CSS.escape(error.field)}"]`);
  const message = el("div", { class: "field-error", role: "alert", text: error.message });
  if (input) input.closest("label").append(message);
  else form.append(message);
}

const when = (ms) => (ms ? new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "");
const seconds = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
const who = (call) => call.contact || call.remote;

// ---- routing ----

const pages = { home, calls, contacts, settings, talk };

async function route() {
  const main = $("#main");
  if (!state.csrf) {
    try {
      state.csrf = (await api("GET", "/api/session")).csrf;
    } catch (_) {
      state.csrf = null;
    }
  }
  if (!state.csrf) {
    $("#nav").hidden = true;
    closeEvents();
    const setup = await api("GET", "/api/setup");
    main.replaceChildren(setup.password_set ? loginView() : setupView());
    return;
  }
  $("#nav").hidden = false;
  const name = (location.hash.slice(1).split("/")[0] || "home");
  const page = pages[name] ? name : "home";
  state.page = page;
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("on", a.dataset.page === page));
  openEvents();
  main.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    main.replaceChildren(...[await pages[page]()].flat());
  } catch (e) {
    main.replaceChildren(el("section", { class: "card fault" }, el("h2", { text: "Something went wrong" }), el("p", { text: e.message })));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", async () => {
    await api("POST", "/api/logout").catch(() => {});
    state.csrf = null;
    route();
  });
  route();
});

// ---- first set-up and login ----

function setupView() {
  let token = null;
  const code = el("input", { name: "code", id: "setup-code", inputmode: "numeric", autocomplete: "one-time-code", placeholder: "6 digits, if you heard them" });
  const password = el("input", { name: "password", id: "setup-password", type: "password", autocomplete: "new-password", minlength: 8, required: true });
  const progress = el("p", { id: "setup-progress", class: "muted", text: "" });
  const finish = el("form", { id: "setup-form", hidden: true, onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      state.csrf = (await api("POST", "/api/setup/finish", { token, password: password.value, code: code.value || null })).csrf;
      location.hash = "#settings";
      route();
    } catch (e) { showError(finish, e); }
  } },
    progress,
    el("label", {}, "Code the box spoke (not needed once you pressed its button)", code),
    el("label", {}, "Choose a password for this page (8 or more characters)", password),
    el("button", { class: "primary", id: "setup-finish", type: "submit", text: "Set password" }));
  const start = el("button", { class: "primary", id: "setup-start", onclick: async () => {
    try {
      token = (await api("POST", "/api/setup/start")).token;
      start.hidden = true;
      finish.hidden = false;
      progress.textContent = "Now press any button on the box (or type the code it speaks).";
      const poll = async () => {
        if (!token || state.csrf) return;
        try {
          const p = await api("GET", `/api/setup/${token}`);
          if (p.button_pressed) { progress.textContent = "✓ The box saw its button pressed. Choose a password."; progress.className = "ok"; return; }
          setTimeout(poll, 1000);
        } catch (e) { progress.textContent = e.message; }
      };
      poll();
    } catch (e) { toast(e.message); }
  } }, "Start set-up");
  return el("section", { class: "card center" },
    el("h1", { text: "Welcome to your VOCA Box" }),
    el("p", { text: "To prove you are at home with the box, it will ask you to press one of its buttons (or speak a code on its speaker). Then you choose the password for this page." }),
    start, finish);
}

function loginView() {
  const password = el("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      state.csrf = (await api("POST", "/api/login", { password: password.value })).csrf;
      route();
    } catch (e) { showError(form, e); }
  } },
    el("h1", { text: "Log in" }),
    el("label", {}, "Password", password),
    el("button", { class: "primary", id: "login", type: "submit", text: "Log in" }),
    el("p", { class: "muted small", text: "Forgot it? On the box: sudo voca web-password" }));
  return el("section", { class: "card center" }, form);
}

// ---- live events ----

function openEvents() {
  if (state.events) return;
  const source = new EventSource("/api/events");
  state.events = source;
  source.addEventListener("status", (e) => { state.status = JSON.parse(e.data); onStatus(); });
  source.addEventListener("log", (e) => onLog(JSON.parse(e.data)));
  source.addEventListener("resync", () => route());
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) { state.events = null; setTimeout(() => state.csrf && openEvents(), 3000); }
  };
}

function closeEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

function onStatus() {
  const s = state.status;
  $("#box-name").textContent = s.name;
  if (state.page === "home") renderLive();
  const leds = $("#leds");
  if (leds && s) refreshHomeHeader();
}

function onLog(written) {
  if (written.kind === "turn") {
    const box = document.querySelector(`.transcript[data-sid="${CSS.escape(written.call_sid)}"]`);
    if (box) box.append(el("p", { class: written.speaker, text: written.text }));
  } else if (written.kind === "call" && (state.page === "calls" || state.page === "home")) {
    clearTimeout(onLog.timer);
    onLog.timer = setTimeout(() => (state.page === "calls" ? refreshCalls() : refreshMessages()), 300);
  }
}

// ---- Home ----

const STATE_TEXT = { starting: "Starting", ready: "Ready: calls reach the box", offline: "Offline: local features only", stopping: "Stopping" };
const SPEECH_TEXT = { off: "off", downloading: "downloading", loading: "loading", warming: "warming up", ready: "ready", failed: "failed" };

async function home() {
  const s = await api("GET", "/api/status");
  state.status = s;
  const view = [
    el("section", { class: "card", id: "box-state" }),
    el("section", { class: "card", id: "live" }, el("h2", { text: "Live calls" }), el("div", { id: "live-calls" })),
    el("section", { class: "card", id: "messages" }, el("h2", { text: "Messages waiting" }), el("div", { id: "message-list" })),
  ];
  setTimeout(() => { refreshHomeHeader(s); renderLive(); renderMessages(s.messages); });
  return view;
}

async function refreshHomeHeader(full) {
  const box = $("#box-state");
  if (!box) return;
  const s = full || (await api("GET", "/api/status"));
  const led = (name, pattern) => el("span", { class: "led" }, el("i", { class: pattern, title: pattern }), name);
  const leds = el("div", { class: "leds", id: "leds" }, ...Object.entries(s.leds || {}).map(([role, p]) => led(role, p)));
  const net = s.network || {};
  const facts = el("div", { class: "grid" },
    el("div", {}, el("div", { class: "muted small", text: "Box" }), el("div", { id: "device-state", text: STATE_TEXT[s.state] || s.state }), leds),
    el("div", {}, el("div", { class: "muted small", text: "Phone number" }), el("div", { text: s.number || "not set up" }),
      el("div", { class: "small", text: `Calls answered by: ${s.do_not_disturb ? "voicemail (do not disturb)" : s.answer}` })),
    el("div", {}, el("div", { class: "muted small", text: "Network" }),
      el("div", { text: net.public_url ? `Reachable (${s.tunnel})` : s.tunnel === "none" ? "No tunnel: local only" : `Tunnel down${net.tunnel_down ? ": " + net.tunnel_down : ""}` }),
      el("div", { class: "small", text: `Twilio API ${net.api_reachable ? "reachable" : "not reachable"}` })),
    el("div", {}, el("div", { class: "muted small", text: "Speech model" }),
      el("div", { id: "speech-state", text: SPEECH_TEXT[s.speech] + (s.speech_download_percent != null ? ` (${s.speech_download_percent} %)` : "") }),
      el("div", { class: "small", text: s.tts ? `Voice: ${s.tts.voice} (${s.tts.engine})` : "" })));
  const parts = [el("h1", { text: s.name }), facts];
  if (s.fault) parts.push(el("section", { class: "card fault", id: "fault" }, el("h2", { text: "Needs attention" }), el("p", { text: s.fault }), el("p", { class: "small muted", text: "Settings → Run the self-check says what to do." })));
  if (!s.twilio_configured) parts.push(el("p", {}, "The box has no phone number yet. ", el("a", { href: "#settings", text: "Set up Twilio" }), "."));
  box.replaceChildren(...parts);
}

function renderLive() {
  const list = $("#live-calls");
  if (!list || !state.status) return;
  const calls = state.status.calls || [];
  if (!calls.length) { list.replaceChildren(el("p", { class: "muted", text: "No call right now." })); return; }
  const known = new Set(calls.map((c) => c.call_sid));
  list.querySelectorAll("[data-live]").forEach((n) => { if (!known.has(n.dataset.live)) n.remove(); });
  list.querySelector("p.muted")?.remove();
  for (const call of calls) {
    let item = list.querySelector(`[data-live="${CSS.escape(call.call_sid)}"]`);
    if (!item) {
      const transcript = el("div", { class: "transcript", "data-sid": call.call_sid });
      item = el("div", { "data-live": call.call_sid, class: "live-call" },
        el("div", { class: "row spread" }, el("strong", { class: "who" }), el("span", { class: "pill duration" }),
          el("button", { class: "danger hangup", onclick: async () => { try { await api("POST", `/api/calls/${call.call_sid}/hangup`); toast("Hanging up…"); } catch (e) { toast(e.message); } } }, "Hang up")),
        transcript);
      list.append(item);
      api("GET", `/api/calls/${call.call_sid}`).then((c) => {
        for (const t of c.turns) transcript.append(el("p", { class: t.speaker, text: t.text }));
      }).catch(() => {});
    }
    item.querySelector(".who").textContent = `${call.direction === "inbound" ? "From" : "To"} ${call.remote}`;
    item.querySelector(".duration").textContent = `${call.state} · ${seconds(call.seconds)}`;
  }
}

async function refreshMessages() {
  if (!$("#message-list")) return;
  const s = await api("GET", "/api/status");
  renderMessages(s.messages);
}

function renderMessages(messages) {
  const list = $("#message-list");
  if (!list) return;
  if (!messages.length) { list.replaceChildren(el("p", { class: "muted", text: "Nothing waiting." })); return; }
  list.replaceChildren(
    el("button", { onclick: () => api("POST", "/api/messages/play").then(() => toast("Playing on the box…")).catch((e) => toast(e.message)) }, "Play all on the box"),
    ...messages.map((m) => el("div", { class: "message" },
      el("div", { class: "row spread" }, el("strong", { text: who(m) }), el("span", { class: "muted small", text: when(m.created_at) })),
      m.voicemail ? el("audio", { controls: true, preload: "metadata", src: `/api/calls/${m.call_sid}/voicemail` }) : el("div", { class: "small", text: "Missed call" }),
      m.voicemail_transcript ? el("p", { class: "small", text: `“${m.voicemail_transcript}”` }) : null,
      el("button", { onclick: async () => { await api("POST", `/api/calls/${m.call_sid}/heard`); refreshMessages(); } }, "Mark heard"))));
}

// ---- Calls ----

async function calls() {
  const [log, usage] = await Promise.all([api("GET", "/api/calls?limit=200"), api("GET", "/api/usage?days=30")]);
  const detail = el("section", { class: "card", id: "call-detail", hidden: true });
  const view = [
    el("section", { class: "card chart" }, el("h2", { text: "Last 30 days" }), chart(usage.days)),
    el("section", { class: "card" }, el("h2", { text: "Call log" }), el("div", { id: "call-table", class: "scroll" })),
    detail,
  ];
  setTimeout(() => renderCalls(log.calls));
  return view;
}

async function refreshCalls() {
  if (!$("#call-table")) return;
  renderCalls((await api("GET", "/api/calls?limit=200")).calls);
  if (state.selected) showCall(state.selected);
}

function renderCalls(list) {
  const table = $("#call-table");
  if (!list.length) { table.replaceChildren(el("p", { class: "muted", text: "No calls yet." })); return; }
  const outcome = (c) => c.outcome === null ? "in progress" : c.voicemail ? "voicemail" : c.outcome;
  table.replaceChildren(el("table", { id: "calls" },
    el("thead", {}, el("tr", {}, el("th", { text: "When" }), el("th", { text: "" }), el("th", { text: "Who" }), el("th", { class: "wide", text: "Length" }), el("th", { text: "Outcome" }))),
    el("tbody", {}, ...list.map((c) => el("tr", { class: "click" + (c.call_sid === state.selected ? " sel" : ""), "data-sid": c.call_sid, onclick: () => showCall(c.call_sid) },
      el("td", { text: when(c.created_at) }), el("td", { text: c.direction === "inbound" ? "↙" : "↗", title: c.direction }),
      el("td", { text: who(c) }), el("td", { class: "wide", text: c.duration_ms != null ? seconds(Math.round(c.duration_ms / 1000)) : "" }),
      el("td", {}, el("span", { class: "pill " + (c.outcome === "completed" ? "ok" : c.outcome ? "warn" : ""), text: outcome(c) }), c.waiting ? el("span", { class: "pill bad", text: "new" }) : null))))));
}

async function showCall(sid) {
  state.selected = sid;
  document.querySelectorAll("#calls tr").forEach((r) => r.classList.toggle("sel", r.dataset.sid === sid));
  const box = $("#call-detail");
  const c = await api("GET", `/api/calls/${sid}`);
  const parts = [el("h2", { text: `${c.direction === "inbound" ? "From" : "To"} ${who(c)} · ${when(c.created_at)}` })];
  if (c.reason) parts.push(el("p", { class: "muted small", text: c.reason }));
  if (c.voicemail) {
    parts.push(el("audio", { id: "voicemail-audio", controls: true, preload: "metadata", src: `/api/calls/${sid}/voicemail` }));
    if (c.voicemail_transcript) parts.push(el("p", { text: `“${c.voicemail_transcript}”` }));
    parts.push(el("div", { class: "row" },
      el("a", { class: "button", href: `/api/calls/${sid}/voicemail?download=true`, download: `voicemail-${sid}.wav` }, "Download"),
      c.waiting ? el("button", { onclick: async () => { await api("POST", `/api/calls/${sid}/heard`); refreshCalls(); } }, "Mark heard") : null,
      el("button", { class: "danger", onclick: async () => { if (!confirm("Delete this message?")) return; await api("DELETE", `/api/calls/${sid}/voicemail`); refreshCalls(); } }, "Delete message")));
  }
  parts.push(el("h2", { text: "Transcript" }));
  const transcript = el("div", { class: "transcript", "data-sid": sid, id: "transcript" }, ...c.turns.map((t) => el("p", { class: t.speaker, text: t.text })));
  if (!c.turns.length) transcript.append(el("p", { class: "muted", text: "Nothing was said (or transcripts are off)." }));
  parts.push(transcript);
  if (c.live) parts.push(el("button", { class: "danger", onclick: () => api("POST", `/api/calls/${sid}/hangup`).catch((e) => toast(e.message)) }, "Hang up"));
  box.replaceChildren(...parts);
  box.hidden = false;
}

function chart(days) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs = {}) => { const n = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  const W = 600, H = 160, pad = 20, bw = (W - pad) / days.length;
  const kinds = ["answered", "missed", "voicemail", "outgoing"];
  const max = Math.max(1, ...days.map((d) => kinds.reduce((a, k) => a + d[k], 0)));
  const maxMin = Math.max(1, ...days.map((d) => d.minutes));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H + 20}`, role: "img", "aria-label": "Calls per day and minutes, last 30 days", id: "usage-chart" });
  days.forEach((d, i) => {
    let y = H;
    for (const k of kinds) {
      const h = (d[k] / max) * (H - 10);
      if (h > 0) { const r = svg("rect", { x: pad + i * bw + 1, y: y - h, width: Math.max(1, bw - 2), height: h, class: k }); const t = svg("title"); t.textContent = `${d.date}: ${d[k]} ${k}`; r.append(t); root.append(r); y -= h; }
    }
    if (i % 5 === 0) { const t = svg("text", { x: pad + i * bw, y: H + 14 }); t.textContent = d.date.slice(5); root.append(t); }
  });
  const points = days.map((d, i) => `${pad + i * bw + bw / 2},${H - (d.minutes / maxMin) * (H - 10)}`).join(" ");
  root.append(svg("polyline", { points, class: "minutes" }));
  const total = days.reduce((a, d) => ({ calls: a.calls + kinds.reduce((s, k) => s + d[k], 0), minutes: a.minutes + d.minutes }), { calls: 0, minutes: 0 });
  return el("div", {}, root,
    el("div", { class: "legend" }, ...kinds.map((k) => el("span", {}, el("i", { class: k }), k)), el("span", { text: "— minutes" })),
    el("p", { class: "small muted", text: `${total.calls} call${total.calls === 1 ? "" : "s"}, ${total.minutes} minute${total.minutes === 1 ? "" : "s"} on the phone` }));
}

// ---- Contacts ----

async function contacts() {
  const data = await api("GET", "/api/contacts");
  const slots = data.buttons.map((b) => b.slot);
  const buttonName = (slot) => (data.buttons.find((b) => b.slot === slot) || {}).button;
  const form = contactForm(null, slots);
  const rows = data.contacts.map((c) => el("tr", { "data-id": c.id },
    el("td", { text: c.name }), el("td", { class: "wide", text: c.number }),
    el("td", { text: c.button ? `button ${c.button}${buttonName(c.button) ? " (" + buttonName(c.button) + ")" : ""}` : "" }),
    el("td", { text: c.emergency ? "emergency" : "" }),
    el("td", {}, el("div", { class: "row" },
      el("button", { class: "primary call-now", onclick: async () => { try { await api("POST", `/api/contacts/${c.id}/call`); toast(`Calling ${c.name} on the box…`); } catch (e) { toast(e.message); } } }, "Call now"),
      el("button", { onclick: (ev) => { const f = contactForm(c, slots); ev.target.closest("tr").after(el("tr", {}, el("td", { colspan: 5 }, f))); } }, "Edit"),
      c.id > 1 ? el("button", { title: "Move up (the emergency chain calls in this order)", onclick: () => saveContact(c.id, { ...c, position: c.id - 1 }) }, "↑") : null,
      el("button", { class: "danger", onclick: async () => { if (confirm(`Delete ${c.name}?`)) { await api("DELETE", `/api/contacts/${c.id}`); route(); } } }, "Delete")))));
  return [
    el("section", { class: "card" }, el("h1", { text: "Contacts" }),
      data.contacts.length ? el("table", { id: "contacts" }, el("thead", {}, el("tr", {}, el("th", { text: "Name" }), el("th", { class: "wide", text: "Number" }), el("th", { text: "Button" }), el("th", { text: "" }), el("th", { text: "" }))), el("tbody", {}, ...rows))
        : el("p", { class: "muted", text: "No contacts yet." }),
      el("p", { class: "small muted", text: "A long press of the call button calls the emergency contacts in this order (all contacts if none is marked) until someone answers." })),
    el("section", { class: "card" }, el("h2", { text: "Add a contact" }), form),
  ];
}

async function saveContact(id, body) {
  const { name, number, button, emergency, position } = body;
  await api(id ? "PUT" : "POST", id ? `/api/contacts/${id}` : "/api/contacts", { name, number, button: button || null, emergency: !!emergency, position: position || null });
  route();
}

function contactForm(contact, slots) {
  const c = contact || { name: "", number: "", button: null, emergency: false };
  const button = el("select", { name: "button" }, el("option", { value: "", text: "no button" }), ...slots.map((s) => el("option", { value: s, selected: c.button === s, text: `button ${s}` })));
  const form = el("form", { class: "contact-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await saveContact(contact && contact.id, { name: f.get("name"), number: f.get("number"), button: f.get("button") ? Number(f.get("button")) : null, emergency: f.get("emergency") === "on" });
      toast("Saved");
    } catch (e) { showError(form, e); }
  } },
    el("label", {}, "Name", el("input", { name: "name", value: c.name, required: true })),
    el("label", {}, "Number (with country code, e.g. +15551234567)", el("input", { name: "number", value: c.number, type: "tel", required: true })),
    el("label", {}, "Called by", button),
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "emergency", checked: c.emergency }), "Emergency contact (called on a long press)"),
    el("button", { class: "primary", type: "submit", text: contact ? "Save" : "Add contact" }));
  return form;
}

// ---- Settings ----

const GROUPS = [
  ["Twilio", ["twilio.account_sid", "twilio.auth_token", "twilio.phone_number"]],
  ["Tunnel", ["tunnel.provider", "tunnel.authtoken", "tunnel.domain", "twilio.public_url"]],
  ["Calls", ["calls.answer", "calls.do_not_disturb", "calls.unanswered", "calls.ring_timeout", "assistant.greeting", "calls.allow", "calls.block", "calls.rate_limit_per_hour"]],
  ["Speech", ["speech.language", "speech.tts", "speech.voice", "speech.model", "speech.download"]],
  ["Home Assistant (MQTT)", ["mqtt.url", "mqtt.username", "mqtt.password", "mqtt.discovery_prefix", "mqtt.base_topic"]],
  ["Box", ["device.name"]],
];
const LABELS = {
  "twilio.account_sid": "Account SID (AC…)", "twilio.auth_token": "Auth token", "twilio.phone_number": "The box's Twilio number",
  "tunnel.provider": "How Twilio reaches the box", "tunnel.authtoken": "ngrok auth token", "tunnel.domain": "ngrok domain (optional)", "twilio.public_url": "External URL (provider \"external\")",
  "calls.answer": "How calls are answered", "calls.do_not_disturb": "Do not disturb (calls go to voicemail)", "calls.unanswered": "Ring mode: nobody answers → ", "calls.ring_timeout": "Ring for",
  "assistant.greeting": "Greeting (empty: the language's default)", "calls.allow": "Only these numbers get through (one per line; empty: everyone)", "calls.block": "Blocked numbers (one per line)",
  "calls.rate_limit_per_hour": "Calls per caller per hour (0: no limit)", "speech.language": "Language", "speech.tts": "Voice engine", "speech.voice": "Voice",
  "speech.model": "Speech model", "speech.download": "Download the model if missing", "device.name": "Box name",
  "mqtt.url": "Broker (mqtt://host:1883 or mqtts://…; empty: off)", "mqtt.username": "Username", "mqtt.password": "Password",
  "mqtt.discovery_prefix": "Discovery prefix", "mqtt.base_topic": "This box's topics (empty: voca/<box name>)",
};
const CHOICES = {
  "calls.answer": ["assistant", "ring", "intercom", "voicemail", "tones"], "calls.unanswered": ["voicemail", "assistant"],
  "tunnel.provider": ["none", "ngrok", "external"], "speech.tts": ["piper", "espeak"],
};

async function settings() {
  const data = await api("GET", "/api/settings");
  const byKey = Object.fromEntries(data.fields.map((f) => [f.key, f]));
  CHOICES["speech.language"] = data.languages;
  const form = el("form", { id: "settings-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const changes = {};
    for (const f of data.fields) {
      if (f.locked || f.key === "contacts") continue;
      const input = form.elements.namedItem(f.key);
      if (!input) continue;
      let v;
      if (input.type === "checkbox") v = input.checked;
      else if (Array.isArray(f.value)) v = input.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      else if (typeof f.value === "number") v = Number(input.value);
      else v = input.value;
      if (f.secret) { if (v) changes[f.key] = v; continue; }
      if (JSON.stringify(v) !== JSON.stringify(f.value)) changes[f.key] = v;
    }
    try {
      const saved = await api("PUT", "/api/settings", changes);
      toast(saved.changed.length ? `Saved${saved.restart ? ": the box restarts its engine to apply it" : ""}` : "Nothing changed");
      if (!saved.restart) route(); else setTimeout(route, 4000);
    } catch (e) { showError(form, e); }
  } });
  for (const [title, keys] of GROUPS) {
    const group = el("fieldset", {}, el("legend", { text: title }));
    if (keys.some((k) => byKey[k].apply === "restart" && !byKey[k].locked)) {
      group.append(el("p", { class: "small muted", text: "Saving a change here restarts the box's engine briefly (after any call in progress)." }));
    }
    for (const key of keys) group.append(fieldInput(byKey[key]));
    if (title === "Twilio") group.append(el("button", { type: "button", id: "test-twilio", onclick: () => testTwilio(form, byKey) }, "Test"), el("div", { id: "twilio-result" }));
    form.append(group);
  }
  form.append(el("button", { class: "primary", type: "submit", id: "save-settings", text: "Save" }));
  const check = el("div", { id: "check-result" });
  return [
    data.settings_error ? el("section", { class: "card fault" }, el("h2", { text: "Saved settings not applied" }), el("p", { text: data.settings_error })) : null,
    el("section", { class: "card" }, el("h1", { text: "Settings" }), el("p", { class: "small muted", text: `Saved on the box; layered over ${data.source}. Values set by environment variables are locked.` }), form),
    el("section", { class: "card" }, el("h2", { text: "Self-check" }), el("button", { id: "run-check", onclick: async (ev) => {
      ev.target.disabled = true;
      check.replaceChildren(el("p", { class: "muted", text: "Checking…" }));
      try { const r = await api("POST", "/api/check"); check.replaceChildren(outcomes(r.outcomes), el("p", { text: r.summary })); } catch (e) { check.textContent = e.message; }
      ev.target.disabled = false;
    } }, "Run the self-check"), check),
  ].filter(Boolean);
}

function fieldInput(f) {
  const label = LABELS[f.key] || f.key;
  let input;
  if (typeof f.value === "boolean" && !f.secret) input = el("input", { type: "checkbox", name: f.key, checked: f.value });
  else if (CHOICES[f.key]) input = el("select", { name: f.key }, ...CHOICES[f.key].map((c) => el("option", { value: c, selected: c === f.value, text: c })));
  else if (Array.isArray(f.value)) input = el("textarea", { name: f.key, rows: 2 }, f.value.join("\n"));
  else if (f.secret) input = el("input", { name: f.key, type: "password", autocomplete: "off", placeholder: f.value ? "set: type to replace" : "not set" });
  else input = el("input", { name: f.key, value: String(f.value), type: typeof f.value === "number" ? "number" : "text" });
  if (f.locked) input.disabled = true;
  const wrap = el(input.type === "checkbox" ? "label" : "label", { class: input.type === "checkbox" ? "check" : "" });
  if (input.type === "checkbox") wrap.append(input, label); else wrap.append(label, input);
  if (f.locked) wrap.append(el("span", { class: "locked", text: `🔒 ${f.locked}` }));
  return wrap;
}

async function testTwilio(form, byKey) {
  const out = $("#twilio-result");
  const changes = {};
  for (const key of ["twilio.account_sid", "twilio.auth_token", "twilio.phone_number"]) {
    const input = form.elements.namedItem(key);
    if (input && !byKey[key].locked && input.value && input.value !== byKey[key].value) changes[key] = input.value;
  }
  out.replaceChildren(el("p", { class: "muted", text: "Asking Twilio…" }));
  try { out.replaceChildren(outcomes((await api("POST", "/api/check/twilio", changes)).outcomes)); }
  catch (e) { out.replaceChildren(el("p", { class: "field-error", text: e.message })); }
}

function outcomes(list) {
  const mark = { pass: ["ok", "✓"], warn: ["warn", "!"], fail: ["bad", "✗"] };
  return el("table", { class: "outcomes" }, el("tbody", {}, ...list.map((o) => el("tr", {},
    el("td", {}, el("span", { class: "pill " + mark[o.status][0], text: mark[o.status][1] + " " + o.name })),
    el("td", {}, el("div", { text: o.detail }), o.hint ? el("div", { class: "small muted", text: o.hint }) : null)))));
}

// ---- Talk ----

async function talk() {
  const text = el("textarea", { id: "say-text", name: "text", rows: 3, maxlength: 500, placeholder: "Dinner is ready!" });
  const form = el("form", { id: "say-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try { await api("POST", "/api/say", { text: text.value }); toast("The box is speaking…"); } catch (e) { showError(form, e); }
  } }, el("label", {}, "Type something, the box says it on its speaker", text), el("button", { class: "primary", id: "say", type: "submit", text: "Say it" }));
  const meter = el("div", { class: "meter" }, el("div", { id: "mic-bar" }));
  const level = el("span", { id: "mic-level", class: "small muted", text: "" });
  let source = null;
  return [
    el("section", { class: "card" }, el("h1", { text: "Talk through the box" }), form),
    el("section", { class: "card" }, el("h2", { text: "Test the speaker and microphone" }),
      el("div", { class: "row" }, el("button", { id: "chime", onclick: () => api("POST", "/api/speaker/test").then(() => toast("Chime playing on the box")).catch((e) => toast(e.message)) }, "Play a chime")),
      el("p", { class: "small muted", text: "Speak near the box: the bar shows what its microphone hears (30 seconds)." }),
      el("div", { class: "row" }, el("button", { id: "mic-test", onclick: () => {
        if (source) source.close();
        source = new EventSource("/api/microphone/level");
        source.addEventListener("level", (e) => { const d = JSON.parse(e.data).dbfs; $("#mic-bar").style.width = `${Math.max(0, Math.min(100, (d + 70) * 100 / 70))}%`; level.textContent = `${d} dBFS`; });
        source.addEventListener("silent", (e) => { level.textContent = JSON.parse(e.data).why; source.close(); });
        source.addEventListener("done", () => source.close());
      } }, "Test the microphone"), level), meter),
  ];
}
