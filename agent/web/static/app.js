// The staff till (/till): it speaks only the kit's own HTTP API (see docs/api.md). It sells
// with the staff token, and takes customers' reservations (from the shop, /) to payment.
"use strict";

const $ = (id) => document.getElementById(id);
const cart = new Map(); // sku -> qty
let items = [];
// The staff device key, made from the staff token, which never leaves this page (staffsign.js).
let token = localStorage.getItem("dropkit.staffKey") || "";
localStorage.removeItem("dropkit.token"); // an older page kept the token itself
const mine = JSON.parse(localStorage.getItem("dropkit.orders") || "[]"); // ids placed here
let pendingOrderId = null; // kept across a failed send so a retry is the same order
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

function renderItems() {
  $("items").replaceChildren(...items.map((item) => {
    const inCart = cart.get(item.sku) || 0;
    const button = el("button", {
      type: "button", disabled: item.available - inCart <= 0,
      onclick: () => { cart.set(item.sku, inCart + 1); renderAll(); },
    }, el("span", {}, item.name), el("span", {},
      `${money(item.price_cents)} `, el("span", { className: "left" }, `${item.available} left`)));
    button.dataset.sku = item.sku;
    return el("li", {}, button);
  }));
}

function renderCart() {
  let total = 0;
  $("cart").replaceChildren(...[...cart].map(([sku, qty]) => {
    const item = items.find((i) => i.sku === sku);
    total += item ? item.price_cents * qty : 0;
    const less = el("button", { type: "button", onclick: () => {
      if (qty > 1) cart.set(sku, qty - 1); else cart.delete(sku);
      renderAll();
    } }, "−");
    return el("li", {}, `${qty} × ${item ? item.name : sku}`, less);
  }));
  $("cart-total").textContent = money(total);
  $("place").disabled = cart.size === 0 || !token;
  $("place").textContent = token ? "Place order" : "Staff only";
}

function renderAll() { renderItems(); renderCart(); }

async function loadManifest() {
  const { data } = await api("GET", "/api/manifest");
  items = data.items;
  $("manifest-version").textContent = data.version ? `manifest ${data.version}` : "no manifest";
  renderAll();
}

// The kit's parts and alerts in the words staff use (health: "parts" and "alerts").
const PART_NAMES = {
  power: "Power monitor", power_rig: "Simulated power supply", printer: "Receipt printer",
  scanner: "Barcode scanner", panel: "Button panel", uplink: "Connection to HQ",
  uplink_drain: "Sending orders to HQ", telemetry: "Power reports to HQ",
  uplink_health: "HQ connection check", uplink_keepalive: "HQ connection keep-alive",
  reconcile: "Checking HQ's answers", events: "Event log", holds: "Reservation expiry",
};
const ALERT_WORDS = {
  printer_paper_out: "Printer is out of paper", printer_cover_open: "Printer cover is open",
  printer_offline: "Printer is not answering",
};
const STATUS_WORDS = {
  ready: "Ready: taking orders",
  degraded: "Taking orders, but something needs attention",
  stopping: "Shutting down: no new orders",
};

function partName(name) { return PART_NAMES[name] || name.replaceAll("_", " "); }

function plainReason(reason) {
  // "GPIOPinInUse: pin GPIO17 is already in use by <gpiozero.Button ...>" -> the words.
  const words = reason.replace(/^[A-Za-z_.]*(Error|Exception|InUse|Factory|Fault)?: /, "")
    .replace(/ by <[^>]*>/g, "").replace(/<[^>]*>/g, "").trim();
  return words || "it stopped working";
}

function alertWords(alert) {
  if (ALERT_WORDS[alert]) return ALERT_WORDS[alert];
  if (alert.startsWith("power_sensor_")) {
    return `Power sensor "${alert.slice("power_sensor_".length)}" is not answering`;
  }
  return alert.replaceAll("_", " ");
}

function showStatus(kit) {
  // kit: {status, degraded: {part: reason}, alerts: [...]} (from /api/health or "status").
  const strip = $("kit-status");
  strip.className = `kit-status ${kit.status}`;
  strip.dataset.status = kit.status;
  $("kit-status-word").textContent = STATUS_WORDS[kit.status] || kit.status;
  $("kit-status-parts").replaceChildren(...Object.entries(kit.degraded || {}).map(
    ([part, reason]) => {
      const li = el("li", {}, el("strong", {}, `${partName(part)} is not working`),
        `: ${plainReason(reason)}. Sales go on without it.`);
      li.dataset.part = part;
      return li;
    }));
  $("kit-status-alerts").replaceChildren(...(kit.alerts || [])
    // Degraded parts are listed above; storage has its own warning below the header.
    .filter((alert) => !/^(degraded_|storage_|store_)/.test(alert))
    .map((alert) => el("li", {}, alertWords(alert))));
}

function showUnreachable() {
  const strip = $("kit-status");
  if (strip.dataset.status === "stopping") return; // it said it was going: keep the why
  strip.className = "kit-status unreachable";
  strip.dataset.status = "unreachable";
  $("kit-status-word").textContent = "No answer from the kit: check its power and Wi-Fi";
  $("kit-status-parts").replaceChildren();
  $("kit-status-alerts").replaceChildren();
}

async function loadHealth() {
  let r;
  try {
    r = await api("GET", "/api/health");
  } catch (e) {
    r = { ok: false };
  }
  if (!r.ok) { showUnreachable(); return; } // gone, or closing its store as it shuts down
  const data = r.data;
  showStatus(data);
  $("kit").textContent = `dropkit · ${data.kit_id}${data.simulated ? " (sim)" : ""}`;
  $("mode").textContent = data.mode + (data.staff_latch ? " (latched)" : "");
  $("mode").className = `badge ${data.mode}`;
  $("uplink").textContent = `uplink ${data.uplink.state}`;
  $("queue").textContent = `queue ${data.queue_depth}`;
  showPower(data.power);
  showStorage(data.storage);
  $("sim").hidden = !(data.simulated && token);
  $("latch").textContent = data.staff_latch ? "Release offline latch" : "Force offline";
  $("latch").dataset.latched = data.staff_latch ? "1" : "";
  showManifestConflict(data.manifest.conflict);
}

function showManifestConflict(conflict) {
  $("manifest-conflict").hidden = !conflict;
  if (!conflict) return;
  const skus = Object.entries(conflict.skus).map(
    ([sku, n]) => `${sku} (sold ${n.sold}, the file allows ${n.file_qty})`).join(", ");
  $("manifest-conflict").textContent = `The manifest file ${conflict.file} was not loaded: `
    + `more was sold than it allows of ${skus}. The kit sells from the manifest it had; `
    + "load a corrected manifest to clear this.";
  $("alerts-section").hidden = false;
}

const STORAGE_WORDS = {
  low: (s) => `Storage low: ${s.free_mb} MB free. Free space on the kit's card soon.`,
  full: () => "Storage full: orders are refused and nothing is saved. Free space on the kit's "
    + "card; the kit carries on by itself.",
  damaged: () => "The kit's order book is damaged: orders are refused. Restart the kit.",
  lost: () => "The kit's order book was removed or replaced: orders are refused. "
    + "Restart the kit.",
};

function showStorage(storage) {
  const words = storage && STORAGE_WORDS[storage.state];
  $("storage").hidden = !words;
  $("storage-warning").hidden = !words;
  if (!words) return;
  $("storage").textContent = `storage ${storage.state}`;
  $("storage").className = "badge offline";
  $("storage-warning").textContent = words(storage);
}

function showPower(power) {
  const ups = power.ups && power.ups.percent !== null ? ` ${Math.round(power.ups.percent)}%` : "";
  $("power").textContent = `power ${power.state}${power.feeding ? ` (${power.feeding})` : ""}${ups}`;
  $("power").className = `badge ${power.state.startsWith("OB") || power.state.includes("FSD")
    ? "offline" : "online"}`;
  const rig = power.simulated_rig;
  if (rig) {
    $("rig").textContent = `rig: ${rig.scenario}, mains ${rig.mains_present ? "in" : "out"}, `
      + `battery ${Math.round(rig.battery_percent)}%, load ${rig.load_amps} A`;
  }
}

function orderActions(order) {
  const act = (label, path, body) => el("button", { type: "button", onclick: async () => {
    const r = await api("POST", `/api/staff/orders/${order.order_id}/${path}`, body, true);
    say(r.ok ? `${label}: ${order.order_id.slice(0, 8)}` : r.data.detail, !r.ok);
    refresh();
  } }, label);
  const actions = [];
  if (["voided", "refunded"].includes(order.status)) return actions;
  if (order.payment.status === "pending") {
    actions.push(act("Card paid", "payment", { result: "paid" }),
      act("Card failed", "payment", { result: "failed" }));
  }
  if (order.payment.status !== "paid") actions.push(act("Void", "void", {}));
  else actions.push(act("Refund", "refund", {}));
  return actions;
}

async function loadOrders() {
  let orders;
  if (token) {
    const r = await api("GET", "/api/orders?limit=30", undefined, true);
    if (!r.ok) { lockStaff(r.data.detail); return loadOrders(); }
    orders = r.data.orders;
  } else {
    const found = await Promise.all(mine.slice(-10).reverse().map(
      (id) => api("GET", `/api/orders/${id}`)));
    orders = found.filter((r) => r.ok).map((r) => r.data);
  }
  $("orders").replaceChildren(...orders.map((order) => {
    const li = el("li", {},
      el("span", { className: "status" }, order.status), " ",
      `#${order.number} · ${money(order.total_cents)} · ${order.payment.method} `
      + `(${order.payment.status}) · ${order.lines.map((l) => `${l.qty}× ${l.name}`).join(", ")}`);
    li.dataset.orderId = order.order_id;
    if (token) {
      const actions = orderActions(order);
      if (order.status !== "voided") {
        actions.push(el("button", { type: "button", onclick: async () => {
          const r = await api("POST", `/api/staff/orders/${order.order_id}/reprint`, {}, true);
          say(r.ok ? "Reprint queued" : r.data.detail, !r.ok);
        } }, "Reprint"));
      }
      li.append(el("div", { className: "order-actions" }, ...actions));
    }
    return li;
  }));
}

async function placeOrder() {
  if (cart.size === 0) return;
  pendingOrderId = pendingOrderId || uuid4();
  const body = {
    order_id: pendingOrderId,
    lines: [...cart].map(([sku, qty]) => ({ sku, qty })),
    payment: { method: $("payment").value },
  };
  $("place").disabled = true;
  let r;
  try {
    r = await api("POST", "/api/orders", body, true);
  } catch (e) {
    say("The kit did not answer; press Place order again (it will not sell twice).", true);
    $("place").disabled = false;
    return;
  }
  pendingOrderId = null;
  if (r.ok) {
    mine.push(r.data.order_id);
    localStorage.setItem("dropkit.orders", JSON.stringify(mine.slice(-50)));
    cart.clear();
    say(`Order #${r.data.number} ${r.data.status}: ${money(r.data.total_cents)}`);
  } else {
    say(r.data.detail, true);
  }
  refresh();
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
  $("token").hidden = !!token;
  $("token-save").hidden = !!token;
  $("pickup-section").hidden = !token;
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

function refresh() { loadManifest(); loadHealth(); loadOrders(); loadReservations(); }

function alert(event) {
  const data = JSON.parse(event.data);
  if (data.type === "manifest_conflict") { showManifestConflict(data); return; }
  const text = `${data.type.replace("_", " ")}: ${data.order_id ? data.order_id.slice(0, 8) : ""}`
    + (data.reason ? ` (${data.reason})` : "");
  $("alerts").prepend(el("li", {}, `${new Date().toLocaleTimeString()} ${text}`));
  $("alerts-section").hidden = false;
  loadOrders();
}

function scanned(event) {
  const scan = JSON.parse(event.data);
  if (scan.kind === "sku") {
    const item = items.find((i) => i.sku === scan.sku);
    if (item && item.available - (cart.get(scan.sku) || 0) > 0) {
      cart.set(scan.sku, (cart.get(scan.sku) || 0) + 1);
      renderAll();
      say(`Scanned ${item.name}`);
    } else {
      say(`Scanned ${scan.sku}: none left`, true);
    }
  } else if (scan.kind === "pickup") {
    if (scan.order_id) findPickup(scan.code);
    else say(`No reservation has the pickup code ${scan.code}`, true);
  } else if (scan.kind === "receipt") {
    say(scan.order_id ? `Receipt scanned: order ${scan.order_id}` : "Receipt not from this kit",
      !scan.order_id);
    const row = document.querySelector(`[data-order-id="${scan.order_id}"]`);
    if (row) row.scrollIntoView();
  } else {
    say(`Unknown barcode: ${scan.text}`, true);
  }
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
  events.addEventListener("status", loadHealth);
  events.addEventListener("alert", alert);
  events.addEventListener("scan", scanned);
  events.addEventListener("power", (event) => showPower(JSON.parse(event.data)));
  // The staff stream opens with the kit's health: what happened while it was being opened (or
  // while the page was away) is read now, so no order is missed between two streams.
  events.addEventListener("health", (event) => { showStatus(JSON.parse(event.data)); refresh(); });
  events.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
  events.addEventListener("error", () => { loadHealth(); });
}

$("place").addEventListener("click", placeOrder);
wirePickup();
$("token-save").addEventListener("click", unlock);
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
listen();
setInterval(() => { loadHealth(); if (!token) loadOrders(); }, 10000);
