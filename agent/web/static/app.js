// The staff till (/till): it speaks only the kit's own HTTP API (see docs/api.md). It sells
// with the staff token, and takes customers' reservations (from the shop, /) to payment.
// This file holds what the others share (the signed API call, the staff key, the event
// stream) and starts the page; words.js, status.js, cart.js, orders.js, printjobs.js,
// pickup.js and confirm.js are loaded before it and hold the rest, one purpose each.
"use strict";

const $ = (id) => document.getElementById(id);
// The staff device key, made from the staff token, which never leaves this page (staffsign.js).
let token = localStorage.getItem("dropkit.staffKey") || "";
localStorage.removeItem("dropkit.token"); // an older page kept the token itself
let stream = null; // the open EventSource
let streamRetry = null; // the timer that opens the next one
let streamGeneration = 0; // a newer listen() wins over one still waiting for its ticket

const money = (cents) => (cents / 100).toFixed(2);

async function api(method, path, body, staff) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const text = body === undefined ? undefined : JSON.stringify(body);
  const response = staff ? await staffSign.fetch(token, method, path, text, headers)
    : await fetch(path, { method, headers, body: text });
  const data = await response.json();
  return { ok: response.ok, status: response.status, data };
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function lockStaff(reason) {
  token = "";
  localStorage.removeItem("dropkit.staffKey");
  if (reason) say(reason, true);
  showStaff();
  listen();
}

function showStaff() {
  $("staff-tools").hidden = !token;
  $("token-clear").hidden = !token;
  $("unlock").hidden = !!token;
  $("pickup-section").hidden = !token;
  if (!token) $("printjobs-section").hidden = true;
  renderCart();
}

async function unlock() {
  token = staffSign.deviceKey($("token").value.trim());
  const r = await api("GET", "/api/staff/check", undefined, true);
  if (!r.ok) { lockStaff(r.data.detail); return; }
  localStorage.setItem("dropkit.staffKey", token);
  $("token").value = "";
  showStaff();
  say("Staff tools unlocked");
  refresh();
  listen();
}

async function toggleLatch() {
  const r = await api("POST", "/api/staff/mode", { offline: !$("latch").dataset.latched }, true);
  if (!r.ok) say(r.data.detail, true);
  loadHealth();
}

function refresh() {
  loadManifest();
  loadHealth();
  loadOrders();
  loadReservations();
  loadPrintJobs();
}

async function simulate(device, body) {
  const r = await api("POST", `/api/staff/sim/${device}`, body, true);
  if (!r.ok) say(r.data.detail, true);
  loadHealth();
}

function available(event) {
  const left = JSON.parse(event.data).available;
  items.forEach((item) => { if (item.sku in left) item.available = left[item.sku]; });
  renderAll();
}

async function listen() {
  // Anyone gets the public stream (stock left, mode, manifest). Staff get every event: an
  // EventSource cannot send the token, so a staff call gets a ticket that opens one stream.
  const generation = ++streamGeneration;
  clearTimeout(streamRetry);
  if (stream) stream.close();
  stream = null;
  let url = "/api/events";
  if (token) {
    let r = null;
    try {
      r = await api("POST", "/api/staff/stream-ticket", undefined, true);
    } catch (e) {
      r = null; // the kit did not answer: try again below
    }
    if (generation !== streamGeneration) return;
    if (r && r.ok) {
      url += `?ticket=${encodeURIComponent(r.data.ticket)}`;
    } else if (r && [401, 403].includes(r.status)) {
      lockStaff(r.data.detail);
      return;
    } else {
      streamRetry = setTimeout(listen, 3000);
      return;
    }
  }
  const events = stream = new EventSource(url);
  events.onerror = () => {
    loadHealth(); // the kit gone shows at once, not at the next look
    // A ticket opens one stream: after a drop (the kit restarted), staff need a new one.
    if (token || events.readyState === EventSource.CLOSED) {
      events.close();
      if (stream === events) streamRetry = setTimeout(listen, 2000);
    }
  };
  events.addEventListener("availability", available);
  events.addEventListener("order", refresh);
  events.addEventListener("manifest", loadManifest);
  events.addEventListener("mode", loadHealth);
  events.addEventListener("uplink", loadHealth);
  events.addEventListener("printer", loadHealth);
  events.addEventListener("scanner", loadHealth);
  events.addEventListener("print_job", loadPrintJobs);
  events.addEventListener("alert", alertEvent);
  events.addEventListener("scan", scanned);
  events.addEventListener("power", (event) => showPower(JSON.parse(event.data)));
  // The staff stream opens with the kit's health: what happened while it was being opened (or
  // while the page was away) is read now, so no order is missed between two streams.
  events.addEventListener("health", (event) => { showStatus(JSON.parse(event.data)); refresh(); });
  events.addEventListener("status", (event) => { showStatus(JSON.parse(event.data)); loadHealth(); });
}

wireCart();
wirePickup();
$("token-save").addEventListener("click", unlock);
$("token").addEventListener("keydown", (event) => { if (event.key === "Enter") unlock(); });
$("token-clear").addEventListener("click", () => { lockStaff(); refresh(); });
$("latch").addEventListener("click", toggleLatch);
document.querySelectorAll("[data-power]").forEach((b) => b.addEventListener("click",
  () => simulate("power", { action: b.dataset.power, sensor: b.dataset.sensor })));
document.querySelectorAll("[data-scenario]").forEach((b) => b.addEventListener("click",
  () => simulate("power", { action: "scenario", name: b.dataset.scenario, speed: 20 })));
document.querySelectorAll("[data-paper]").forEach((b) => b.addEventListener("click",
  () => simulate("paper", { level: b.dataset.paper })));
document.querySelectorAll("[data-button]").forEach((b) => b.addEventListener("click",
  () => simulate("button", { button: b.dataset.button })));
$("scan").addEventListener("click", () => simulate("scan", { text: $("scan-text").value }));
showStaff();
refresh();
settleRestoredOrder();
listen();
watchHealth();
setInterval(() => { if (!token) loadOrders(); }, 10000);
