// The customers' shop: reserve on the phone, pay at the stall (docs/stall.md). It speaks only
// the kit's public API (docs/api.md): nothing here can pay, void, refund or reprint.
//
// A reservation is kept on the phone (localStorage) from the tap on Reserve, and sent again with
// the same order_id until the kit answers, across Wi-Fi drops and reloads: the kit answers a
// repeat with the same reservation, never a second one. A refusal puts the lines back in the
// cart (a local rollback) with the kit's reason in plain words.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = { device: "dropkit.shop.device", cart: "dropkit.shop.cart",
  pending: "dropkit.shop.pending", tickets: "dropkit.shop.tickets" };
const MAX_RETRY_MS = 10000;
const POLL_MS = 15000;
const STREAM_AGAIN_MS = 60000;

function load(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch (e) { return fallback; }
}
function keep(key, value) { localStorage.setItem(key, JSON.stringify(value)); }

let items = [];
let currency = "EUR";
let readAt = 0; // performance.now() when the manifest was read: countdowns count from it
const cart = new Map(Object.entries(load(KEYS.cart, {})));
let tickets = load(KEYS.tickets, []); // the kit's answers, newest first, each with its QR
let sending = false;
let retryTimer = null;
let retryMs = 1000;

function deviceId() {
  let id = localStorage.getItem(KEYS.device);
  if (!id) { id = uuid4(); localStorage.setItem(KEYS.device, id); }
  return id;
}

function money(cents) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch (e) {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function say(text, tone = "") {
  $("message").textContent = text;
  $("message").className = `message ${tone}`;
}

function itemOf(sku) { return items.find((i) => i.sku === sku); }
function opensIn(item) {
  return Math.max(0, Math.ceil(item.opens_in_s - (performance.now() - readAt) / 1000));
}
function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${m}:${s}`;
}
function localTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// -- what is on sale, and the cart -------------------------------------------------------------

function saveCart() { keep(KEYS.cart, Object.fromEntries(cart)); }

function setQty(sku, qty) {
  if (qty > 0) cart.set(sku, qty); else cart.delete(sku);
  saveCart();
  render();
}

function most(item) {
  return Math.min(item.available, item.limit_per_customer ?? Infinity);
}

function renderItems() {
  if (!items.length) return;
  $("items").replaceChildren(...items.map((item) => {
    const qty = cart.get(item.sku) || 0;
    const wait = opensIn(item);
    const soldOut = item.available <= 0;
    const stock = el("p", { className: "stock" });
    if (soldOut) stock.append(el("span", { className: "soldout" }, "Sold out"));
    else if (wait > 0) {
      stock.append(el("span", { className: "opens" },
        `On sale at ${localTime(item.opens_at)}, in ${clock(wait)}`));
    } else stock.append(`${item.available} left`);
    if (item.limit_per_customer) stock.append(` · at most ${item.limit_per_customer} each`);
    const li = el("li", { className: `item${soldOut ? " sold-out" : ""}` },
      el("span", { className: "name" }, item.name),
      el("div", { className: "qty" },
        el("button", { type: "button", disabled: qty === 0, ariaLabel: `One less ${item.name}`,
          onclick: () => setQty(item.sku, qty - 1) }, "−"),
        el("span", {}, String(qty)),
        el("button", { type: "button", disabled: qty >= most(item),
          ariaLabel: `Add ${item.name}`, onclick: () => setQty(item.sku, qty + 1) }, "+")),
      el("span", { className: "price" }, money(item.price_cents)), stock);
    li.dataset.sku = item.sku;
    li.dataset.available = String(item.available);
    return li;
  }));
}

function renderCart() {
  let total = 0;
  const lines = [...cart].filter(([sku]) => itemOf(sku));
  $("cart").replaceChildren(...lines.map(([sku, qty]) => {
    const item = itemOf(sku);
    total += item.price_cents * qty;
    return el("li", {}, el("span", {}, `${qty} × ${item.name}`),
      el("span", {}, money(item.price_cents * qty)));
  }));
  $("cart-empty").hidden = lines.length > 0;
  $("total").textContent = money(total);
  const wait = Math.max(0, ...lines.map(([sku]) => opensIn(itemOf(sku))));
  const reserve = $("reserve");
  reserve.disabled = !lines.length || wait > 0 || !!load(KEYS.pending, null);
  reserve.textContent = wait > 0 ? `Reserve: opens in ${clock(wait)}` : "Reserve";
}

// -- reservations ------------------------------------------------------------------------------

function saveTickets() { keep(KEYS.tickets, tickets.slice(0, 20)); }

function headline(view) {
  if (view.payment.status === "paid") {
    return `Paid: thank you! Receipt #${view.receipt.seq}`;
  }
  return { held: "You got it! Show this code at the stall and pay there.",
    expired: "Your hold ran out: the items went back on sale.",
    cancelled: "The stall let this reservation go." }[view.status] || view.status;
}

function ticketNode(view) {
  const r = view.reservation;
  const state = view.payment.status === "paid" ? "paid" : view.status;
  const li = el("li", { className: `ticket ${state}` }, el("p", { className: "headline" },
    headline(view)));
  li.dataset.orderId = view.order_id;
  li.dataset.state = state;
  if (state === "held") {
    li.append(el("p", { className: "code" }, r.code));
    if (view.qr) {
      li.append(el("img", { alt: `QR code of ${r.code}`,
        src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(view.qr)}` }));
    }
    const left = Math.max(0, Math.ceil(r.expires_in_s - (performance.now() - view.seenAt) / 1000));
    li.append(el("p", { className: "left" },
      `Held for you until ${localTime(r.expires_at)} (${clock(left)} left)`));
  }
  li.append(el("p", { className: "what" }, view.lines.map((l) => `${l.qty} × ${l.name}`)
    .join(", "), ` · ${money(view.total_cents)}`));
  if (state !== "held") {
    li.append(el("button", { type: "button", onclick: () => {
      tickets = tickets.filter((t) => t.order_id !== view.order_id);
      saveTickets();
      render();
    } }, "Remove"));
  }
  return li;
}

function renderTickets() {
  const pending = load(KEYS.pending, null);
  const nodes = [];
  if (pending) {
    const what = pending.body.lines.map((l) => `${l.qty} × ${(itemOf(l.sku) || l).name || l.sku}`);
    const li = el("li", { className: "ticket sending" }, el("p", { className: "headline" },
      "Reserving…"), el("p", { className: "what" }, what.join(", ")),
      el("p", { className: "note" }, "Kept on this phone and sent again until the kit answers: "
        + "it is never reserved twice."));
    li.dataset.orderId = pending.body.order_id;
    li.dataset.state = "sending";
    nodes.push(li);
  }
  nodes.push(...tickets.map(ticketNode));
  $("tickets").replaceChildren(...nodes);
  $("tickets-section").hidden = nodes.length === 0;
}

function render() { renderItems(); renderCart(); renderTickets(); }

function refusalWords(data) {
  const item = itemOf(data.sku);
  const name = item ? item.name : data.sku;
  if (data.error === "sold_out") {
    return data.available > 0
      ? `Only ${data.available} ${name} left: change the quantity and reserve again.`
      : `Sorry, you did not get ${name}: it sold out before your request reached the kit.`;
  }
  if (data.error === "not_open") {
    return `${name} is not on sale yet: it opens at ${localTime(data.opens_at)}.`;
  }
  if (data.error === "limit_reached") return `Sorry: ${data.detail}.`;
  if (data.error === "order_id_reused") {
    return "This reservation was already sent with other items; please reserve again.";
  }
  return data.detail || `The kit refused this (${data.error}).`;
}

function reserve() {
  const lines = [...cart].filter(([sku]) => itemOf(sku)).map(([sku, qty]) => ({ sku, qty }));
  if (!lines.length || load(KEYS.pending, null)) return;
  // Optimistic: the lines leave the cart for the reservation at once, kept on the phone.
  keep(KEYS.pending, { body: { order_id: uuid4(), lines, device: deviceId() } });
  cart.clear();
  saveCart();
  say("");
  render();
  $("tickets-section").scrollIntoView({ block: "start" });
  send();
}

function retryLater(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(send, ms);
}

async function send() {
  const pending = load(KEYS.pending, null);
  if (!pending || sending) return;
  sending = true;
  clearTimeout(retryTimer);
  let response;
  let data;
  try {
    response = await fetch("/api/orders", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(pending.body) });
    data = await response.json();
  } catch (e) {
    sending = false;
    showNet("No answer from the kit: your reservation is kept and sent again by itself.");
    retryLater(retryMs);
    retryMs = Math.min(MAX_RETRY_MS, retryMs * 2);
    return;
  }
  sending = false;
  showNet("");
  if (response.status >= 500 || response.status === 408 || response.status === 429) {
    // Nothing was decided: the kit is busy or stopping. Send it again when it says.
    const after = Number(response.headers.get("Retry-After")) || 2;
    say(`${data.detail || "The kit is busy"}; trying again in ${after} s.`, "bad");
    retryLater(Math.min(after, 60) * 1000);
    return;
  }
  retryMs = 1000;
  localStorage.removeItem(KEYS.pending);
  if (response.ok) {
    data.seenAt = performance.now();
    tickets = [data, ...tickets.filter((t) => t.order_id !== data.order_id)];
    saveTickets();
    say(data.status === "held" ? "Reserved. Show the code at the stall." : "", "good");
    await fetchQr(data);
    render();
    $("tickets-section").scrollIntoView({ block: "start" });
    return;
  }
  for (const line of pending.body.lines) { // local rollback: the lines back in the cart
    cart.set(line.sku, (cart.get(line.sku) || 0) + line.qty);
  }
  saveCart();
  say(refusalWords(data), "bad");
  render();
}

async function fetchQr(view) {
  if (view.qr || view.status !== "held") return;
  try {
    const response = await fetch(`/api/orders/${encodeURIComponent(view.order_id)}/pickup.svg`);
    if (response.ok) { view.qr = await response.text(); saveTickets(); }
  } catch (e) {
    // offline: the code is shown in letters; the QR comes with the next look
  }
}

async function followTickets() {
  // Each reservation still held is looked at again: paid, or run out.
  for (const [n, old] of tickets.entries()) {
    if (old.status !== "held" || old.payment.status === "paid") continue;
    try {
      const response = await fetch(`/api/orders/${encodeURIComponent(old.order_id)}`);
      if (!response.ok) continue;
      const view = await response.json();
      tickets[n] = { ...view, qr: old.qr, seenAt: performance.now() };
      await fetchQr(tickets[n]);
    } catch (e) {
      return; // offline: look again later
    }
  }
  saveTickets();
  render();
}

function showNet(text) { $("net").textContent = text; $("net").hidden = !text; }

async function loadManifest() {
  try {
    const response = await fetch("/api/manifest");
    const data = await response.json();
    items = data.items;
    currency = data.currency || currency;
    readAt = performance.now();
    $("hold-minutes").textContent = String(data.hold_minutes);
    showNet("");
  } catch (e) {
    showNet("No answer from the kit: check you are on its Wi-Fi.");
    setTimeout(loadManifest, 3000);
    return;
  }
  render();
}

let streaming = false; // the kit's live stream of stock left is open

function listen() {
  // The kit keeps only a few live streams: a phone without one reads the stock every
  // POLL_MS instead, and tries for a stream again later.
  const events = new EventSource("/api/events");
  events.onopen = () => { streaming = true; };
  events.onerror = () => {
    streaming = false;
    if (events.readyState === EventSource.CLOSED) setTimeout(listen, STREAM_AGAIN_MS);
  };
  events.addEventListener("availability", (event) => {
    const left = JSON.parse(event.data).available;
    items.forEach((item) => { if (item.sku in left) item.available = left[item.sku]; });
    render();
  });
  events.addEventListener("manifest", loadManifest);
}

$("reserve").addEventListener("click", reserve);
window.addEventListener("online", send);
tickets.forEach((t) => { t.seenAt = performance.now(); });
loadManifest().then(() => { send(); followTickets(); });
listen();
setInterval(() => { // the countdowns; a hold whose time is up is looked at again
  render();
  if (tickets.some((t) => t.status === "held" && t.payment.status !== "paid"
      && t.reservation.expires_in_s - (performance.now() - t.seenAt) / 1000 < -1)) {
    followTickets();
  }
}, 1000);
setInterval(followTickets, 10000);
setInterval(() => { if (!streaming) loadManifest(); }, POLL_MS);
