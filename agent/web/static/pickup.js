// The till's pickup panel: a customer's reservation (made on the shop page, /) found by its
// code, typed or scanned off the customer's phone, and taken to payment in cash or by card.
// Loaded before app.js, whose helpers ($, api, el, say, money, token, refresh) it uses.
"use strict";

let pickupOrder = null; // the reservation open in the pickup panel

function pickupWords(view) {
  const what = view.lines.map((l) => `${l.qty}× ${l.name}`).join(", ");
  const r = view.reservation;
  if (view.payment.status === "paid") {
    return `${r.code}: paid (${view.payment.method}), receipt #${view.receipt.seq} · ${what}`;
  }
  const left = r.state === "held" ? `, held ${Math.ceil(r.expires_in_s / 60)} more min` : "";
  return `${r.code}: ${r.state}${left} · ${money(view.total_cents)} · ${what}`;
}

function openPickup(view) {
  pickupOrder = view;
  $("pickup").hidden = false;
  $("pickup").dataset.orderId = view.order_id;
  $("pickup").dataset.state = view.payment.status === "paid" ? "paid" : view.reservation.state;
  $("pickup-what").textContent = pickupWords(view);
  $("pickup-actions").hidden = view.payment.status === "paid" || view.reservation.state !== "held";
  $("pickup-section").scrollIntoView({ block: "nearest" });
}

async function findPickup(code) {
  const r = await api("GET", `/api/staff/reservations/${encodeURIComponent(code)}`, undefined,
    true);
  if (!r.ok) { say(r.data.detail, true); return; }
  openPickup(r.data);
  say(`Reservation ${r.data.reservation.code} found`);
}

async function settlePickup(method) {
  if (!pickupOrder) return;
  const r = await api("POST", `/api/staff/orders/${pickupOrder.order_id}/payment`,
    { result: "paid", method }, true);
  if (!r.ok) { say(r.data.detail, true); return; }
  openPickup(r.data);
  say(`Reservation ${r.data.reservation.code} paid (${method}): order #${r.data.receipt.seq}`);
  refresh();
}

async function cancelPickup() {
  if (!pickupOrder) return;
  const r = await api("POST", `/api/staff/orders/${pickupOrder.order_id}/void`,
    { reason: "reservation cancelled by staff" }, true);
  if (!r.ok) { say(r.data.detail, true); return; }
  openPickup(r.data);
  say(`Reservation ${r.data.reservation.code} cancelled: its items are on sale again`);
  refresh();
}

async function loadReservations() {
  $("pickup-section").hidden = !token;
  if (!token) return;
  const r = await api("GET", "/api/staff/reservations", undefined, true);
  if (!r.ok) return;
  $("reservations").replaceChildren(...r.data.reservations.map((view) => {
    const li = el("li", {}, el("button", { type: "button", onclick: () => openPickup(view) },
      pickupWords(view)));
    li.dataset.orderId = view.order_id;
    return li;
  }));
}

function wirePickup() {
  $("pickup-find").addEventListener("click", () => findPickup($("pickup-code").value.trim()));
  $("pickup-code").addEventListener("keydown", (event) => {
    if (event.key === "Enter") findPickup($("pickup-code").value.trim());
  });
  $("pickup-cash").addEventListener("click", () => settlePickup("cash"));
  $("pickup-card").addEventListener("click", () => settlePickup("card"));
  $("pickup-cancel").addEventListener("click", cancelPickup);
}
