// The till's recent orders, each named by the number on its receipt: what became of it in plain
// words, its card payment, Reprint, Void and Refund (both confirmed with a reason first); a
// scanned receipt opens its order, highlighted. Also the one-off alerts ("Needs attention").
"use strict";

const ORDERS_SHOWN = 30;
const known = new Map(); // order_id -> the order as last seen (for its number in messages)
const mine = JSON.parse(localStorage.getItem("dropkit.orders") || "[]"); // ids placed here
let highlighted = null; // the order a scan opened
let pinned = null; // that order when it is not among the recent ones
let shownOrders = [];

function rememberOrder(order) {
  known.set(order.order_id, order);
  if (!mine.includes(order.order_id)) {
    mine.push(order.order_id);
    localStorage.setItem("dropkit.orders", JSON.stringify(mine.slice(-50)));
  }
}

async function orderNamed(orderId) {
  // "order #12", never the order's id; the kit is asked when the page has not seen it.
  if (!known.has(orderId)) {
    try {
      const r = await api("GET", `/api/orders/${encodeURIComponent(orderId)}`);
      if (r.ok) known.set(orderId, r.data);
    } catch (e) {
      return "an order";
    }
  }
  const order = known.get(orderId);
  return order && order.number ? `order #${order.number}` : "an order";
}

function linesWords(order) { return order.lines.map((l) => `${l.qty}× ${l.name}`).join(", "); }

async function act(order, label, path, body) {
  const r = await api("POST", `/api/staff/orders/${order.order_id}/${path}`, body, true);
  say(r.ok ? `${label}: order #${order.number}` : r.data.detail, !r.ok);
  refresh();
}

async function voidOrder(order) {
  const answer = await askConfirm({
    title: `Void order #${order.number}?`,
    what: `${money(order.total_cents)} by card, not paid: ${linesWords(order)}. Its items go `
      + "back on sale and a VOID slip prints.",
    reasons: ["Card declined", "Customer changed their mind", "Sold by mistake"],
    okLabel: `Void order #${order.number}`,
  });
  if (answer) act(order, "Voided", "void", { reason: answer.reason });
  else say(`Nothing changed: order #${order.number} stays as it was`);
}

async function refundOrder(order) {
  const answer = await askConfirm({
    title: `Refund order #${order.number}?`,
    what: `Give back ${money(order.total_cents)} (${order.payment.method}): `
      + `${linesWords(order)}. A REFUND slip prints.`,
    reasons: ["Returned by the customer", "Wrong item or size", "Faulty or damaged",
      "Charged by mistake"],
    restock: true,
    okLabel: `Refund ${money(order.total_cents)}`,
  });
  if (!answer) { say(`Nothing changed: order #${order.number} stays paid`); return; }
  act(order, answer.restock ? "Refunded, items back on sale" : "Refunded", "refund",
    { reason: answer.reason, restock: answer.restock });
}

function orderActions(order) {
  const button = (label, onclick, className = "") => el("button",
    { type: "button", onclick, className }, label);
  const actions = [];
  if (order.status !== "voided") {
    actions.push(button("Reprint", async () => {
      const r = await api("POST", `/api/staff/orders/${order.order_id}/reprint`, {}, true);
      say(r.ok ? `Receipt of order #${order.number}: a copy is printing` : r.data.detail, !r.ok);
      loadPrintJobs();
    }));
  }
  if (["voided", "refunded"].includes(order.status)) return actions;
  if (order.payment.status === "pending") {
    actions.push(button("Card approved",
      () => act(order, "Card approved", "payment", { result: "paid" })),
    button("Card declined", () => act(order, "Card declined", "payment", { result: "failed" })));
  }
  if (order.payment.status !== "paid") actions.push(button("Void", () => voidOrder(order), "danger"));
  else actions.push(button("Refund", () => refundOrder(order), "danger"));
  return actions;
}

function orderCard(order) {
  const [words, tone] = orderStateWords(order);
  const at = new Date(order.created_at).toLocaleTimeString([], { hour: "2-digit",
    minute: "2-digit" });
  const li = el("li", { className: `order${order.order_id === highlighted ? " highlight" : ""}` },
    el("div", { className: "order-head" }, el("strong", {}, `#${order.number}`),
      el("span", { className: "amount" }, money(order.total_cents)),
      el("span", { className: `state ${tone}`, title: orderCodes(order) }, words),
      el("span", { className: "quiet" }, at)),
    el("div", { className: "order-lines" }, linesWords(order)));
  li.dataset.orderId = order.order_id;
  li.dataset.number = String(order.number);
  if (token) li.append(el("div", { className: "order-actions" }, ...orderActions(order)));
  return li;
}

function renderOrders() {
  const list = pinned && !shownOrders.some((o) => o.order_id === pinned.order_id)
    ? [pinned, ...shownOrders] : shownOrders;
  $("orders").replaceChildren(...list.map(orderCard));
  $("orders-none").hidden = list.length > 0;
}

async function loadOrders() {
  let orders;
  if (token) {
    const r = await api("GET", `/api/orders?limit=${ORDERS_SHOWN}`, undefined, true);
    if (!r.ok) { lockStaff(r.data.detail); return loadOrders(); }
    orders = r.data.orders;
  } else {
    const found = await Promise.all(mine.slice(-10).reverse().map(
      (id) => api("GET", `/api/orders/${id}`)));
    orders = found.filter((r) => r.ok).map((r) => r.data);
  }
  orders.forEach((order) => known.set(order.order_id, order));
  if (pinned) pinned = known.get(pinned.order_id) || pinned;
  shownOrders = orders;
  renderOrders();
}

// A scanned receipt: its order opened in the list, highlighted and scrolled to.
async function openOrder(orderId) {
  let order = shownOrders.find((o) => o.order_id === orderId);
  if (!order) {
    const r = await api("GET", `/api/orders/${encodeURIComponent(orderId)}`);
    if (!r.ok) { say(r.data.detail, true); return; }
    order = r.data;
    known.set(orderId, order);
    pinned = order;
  }
  highlighted = orderId;
  renderOrders();
  const row = document.querySelector(`#orders li[data-order-id="${CSS.escape(orderId)}"]`);
  row.scrollIntoView({ block: "center" });
  say(`Receipt scanned: order #${order.number}, ${orderStateWords(order)[0].toLowerCase()}`);
}

function scanned(event) {
  const scan = JSON.parse(event.data);
  if (scan.kind === "sku") {
    const item = itemOf(scan.sku);
    if (item && addOne(scan.sku)) say(`Scanned ${item.name}`);
  } else if (scan.kind === "pickup") {
    if (scan.order_id) findPickup(scan.code);
    else say(`No reservation has the pickup code ${scan.code}`, true);
  } else if (scan.kind === "receipt") {
    if (scan.order_id) openOrder(scan.order_id);
    else say("This receipt is not from this kit, or it was changed: open its QR code on a "
      + "phone to check it.", true);
  } else {
    say(`This barcode is not an item, a receipt or a pickup code: ${scan.text}`, true);
  }
}

// One-off alerts worth a line of their own; the lasting ones (printer, power, storage) are in
// the status strip, which clears them when they are over.
const LASTING = /^(paper_|cover_open|printer_|storage_|store_|sensor_fault|battery_level|shutdown)/;

async function alertEvent(event) {
  const data = JSON.parse(event.data);
  if (data.type === "manifest_conflict") { showManifestConflict(data); return; }
  powerAlert(data);
  if (data.type === "shutdown_requested") {
    logAlert(data.type, "The shutdown button was held, but this kit has no power monitor: "
      + "shut it down by hand.");
    return;
  }
  if (LASTING.test(data.type)) return;
  const order = data.order_id ? await orderNamed(data.order_id) : "an order";
  const words = {
    order_rejected: `HQ refused ${order}${data.reason ? ` (${data.reason})` : ""}: ask the `
      + "organiser what to do; the sale stays on the kit.",
    mismatch: `HQ has not confirmed ${order} yet: keep its receipt; the kit sends it again.`,
    refund_due: `HQ never confirmed ${order}: refund the customer (Refund on the order).`,
  }[data.type] || `Something needs attention (${data.type.replaceAll("_", " ")}), ${order}.`;
  logAlert(data.type, words);
  loadOrders();
}

function logAlert(code, words) {
  const at = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const li = el("li", { title: code }, el("span", {}, `${at} ${words}`));
  li.append(el("button", { type: "button", onclick: () => {
    li.remove();
    $("alerts-section").hidden = !$("alerts").children.length && $("manifest-conflict").hidden;
  } }, "Dismiss"));
  $("alerts").prepend(li);
  $("alerts-section").hidden = false;
}
