// The till's pickup panel: a customer's reservation (made on the shop page, /) found by its
// code, typed or scanned off the customer's phone, and taken to payment in cash or by card.
"use strict";

let pickupOrder = null; // the reservation open in the pickup panel

const HOLD_WORDS = {
  held: "held", expired: "ran out: its items went back on sale",
  cancelled: "cancelled: its items went back on sale",
};

function pickupWords(view) {
  const what = view.lines.map((l) => `${l.qty}× ${l.name}`).join(", ");
  const r = view.reservation;
  if (view.payment.status === "paid") {
    return `${r.code}: paid (${view.payment.method}), order #${view.number} · ${what}`;
  }
  const state = r.state === "held" ? `held ${Math.ceil(r.expires_in_s / 60)} more min`
    : HOLD_WORDS[r.state] || r.state;
  return `${r.code}: ${state} · ${money(view.total_cents)} · ${what}`;
}

function openPickup(view, scrollTo = true) {
  pickupOrder = view;
  const panel = $("pickup");
  panel.hidden = false;
  panel.dataset.orderId = view.order_id;
  panel.dataset.state = view.payment.status === "paid" ? "paid" : view.reservation.state;
  $("pickup-what").textContent = pickupWords(view);
  $("pickup-what").title = `reservation ${view.reservation.state} · status ${view.status}`;
  $("pickup-actions").hidden = view.payment.status === "paid" || view.reservation.state !== "held";
  panel.classList.add("highlight");
  if (scrollTo) panel.scrollIntoView({ block: "center" });
}

async function findPickup(code) {
  const r = await api("GET", `/api/staff/reservations/${encodeURIComponent(code)}`, undefined,
    true);
  if (!r.ok) { say(r.data.detail, true); return; }
  openPickup(r.data);
  say(`Reservation ${r.data.reservation.code} found: take the payment`);
}

async function settlePickup(method) {
  if (!pickupOrder) return;
  const r = await api("POST", `/api/staff/orders/${pickupOrder.order_id}/payment`,
    { result: "paid", method }, true);
  if (!r.ok) { say(r.data.detail, true); return; }
  rememberOrder(r.data);
  openPickup(r.data, false);
  say(`Reservation ${r.data.reservation.code} paid (${method}): order #${r.data.number}`);
  refresh();
}

async function cancelPickup() {
  if (!pickupOrder) return;
  const view = pickupOrder;
  const answer = await askConfirm({
    title: `Cancel reservation ${view.reservation.code}?`,
    what: `${money(view.total_cents)}, not paid: its items go back on sale at once.`,
    reasons: ["The customer does not want it", "The customer did not come"],
    okLabel: "Cancel reservation",
  });
  if (!answer) { say(`Nothing changed: ${view.reservation.code} stays held`); return; }
  const r = await api("POST", `/api/staff/orders/${view.order_id}/void`,
    { reason: answer.reason }, true);
  if (!r.ok) { say(r.data.detail, true); return; }
  openPickup(r.data, false);
  say(`Reservation ${r.data.reservation.code} cancelled: its items are on sale again`);
  refresh();
}

async function loadReservations() {
  $("pickup-section").hidden = !token;
  if (!token) return;
  const r = await api("GET", "/api/staff/reservations", undefined, true);
  if (!r.ok) return;
  $("reservations").replaceChildren(...r.data.reservations.map((view) => {
    const li = el("li", {}, el("button", { type: "button", className: "wide",
      onclick: () => openPickup(view) }, pickupWords(view)));
    li.dataset.orderId = view.order_id;
    return li;
  }));
  $("reservations-none").hidden = r.data.reservations.length > 0;
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
