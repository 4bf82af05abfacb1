// The till's items and cart: tap an item to add one, +/− or type how many, Clear cart, pay in
// cash or by card. The cart is kept in this tablet's storage across a reload, with the order
// being sent (so a retry after a lost answer is the same order, never a second sale).
"use strict";

const CART_KEY = "dropkit.till.cart";
const MAX_QTY = 99; // [orders] max_qty's default: one line's most
const cart = new Map(); // sku -> {qty, name}
let items = [];
let pending = null; // {order_id, key}: the order sent and not answered yet
let openTimer = null; // reloads the manifest when a drop opens

function itemOf(sku) { return items.find((item) => item.sku === sku); }

function saveCart() {
  localStorage.setItem(CART_KEY, JSON.stringify({
    lines: [...cart].map(([sku, line]) => ({ sku, qty: line.qty, name: line.name })),
    pending,
  }));
}

function restoreCart() {
  let kept = {};
  try {
    kept = JSON.parse(localStorage.getItem(CART_KEY) || "{}");
  } catch (e) {
    kept = {}; // not ours to read: start empty
  }
  for (const line of kept.lines || []) {
    if (line && typeof line.sku === "string" && Number.isInteger(line.qty) && line.qty > 0) {
      cart.set(line.sku, { qty: Math.min(line.qty, MAX_QTY), name: String(line.name || line.sku) });
    }
  }
  pending = kept.pending && typeof kept.pending.order_id === "string" ? kept.pending : null;
}

// After a reload: was the order being sent sold meanwhile? Then the cart was sold too.
async function settleRestoredOrder() {
  if (!pending) return;
  let r;
  try {
    r = await api("GET", `/api/orders/${encodeURIComponent(pending.order_id)}`);
  } catch (e) {
    return; // the kit does not answer: the next Place order sends the same order again
  }
  if (r.ok && r.data.number) {
    cart.clear();
    pending = null;
    saveCart();
    renderAll();
    say(`Order #${r.data.number} was sold before the page reloaded: the cart is cleared.`);
  } else if (r.status === 404) {
    pending = null;
    saveCart();
  }
}

function paymentMethod() {
  return document.querySelector("input[name=payment]:checked").value;
}

function resetPayment() {
  document.querySelector("input[name=payment][value=cash]").checked = true;
}

function maxQty(sku) {
  const item = itemOf(sku);
  return Math.min(MAX_QTY, item ? Math.max(item.available, 0) : 0);
}

function setQty(sku, qty, name) {
  if (qty <= 0) cart.delete(sku);
  else cart.set(sku, { qty, name: name || (cart.get(sku) || {}).name || sku });
  saveCart();
}

function addOne(sku) {
  const item = itemOf(sku);
  const qty = (cart.get(sku) || { qty: 0 }).qty;
  if (!item || qty >= maxQty(sku)) {
    say(item ? `${item.name}: no more left to add` : `${sku} is not on sale`, true);
    return false;
  }
  setQty(sku, qty + 1, item.name);
  renderAll();
  return true;
}

function itemWhen(item) {
  const at = new Date(Date.now() + item.opens_in_s * 1000);
  return at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderItems() {
  clearTimeout(openTimer);
  const opening = items.filter((item) => item.opens_in_s > 0).map((item) => item.opens_in_s);
  if (opening.length) openTimer = setTimeout(loadManifest, Math.min(...opening) * 1000 + 500);
  $("items").replaceChildren(...items.map((item) => {
    const inCart = (cart.get(item.sku) || { qty: 0 }).qty;
    const soldOut = item.available <= 0;
    const closed = item.opens_in_s > 0;
    const left = soldOut ? el("span", { className: "left soldout" }, "Sold out")
      : closed ? el("span", { className: "left" }, `On sale at ${itemWhen(item)}`)
        : el("span", { className: "left" }, `${item.available} left`);
    const button = el("button", {
      type: "button", disabled: soldOut || closed || inCart >= maxQty(item.sku),
      className: soldOut ? "soldout" : "", onclick: () => addOne(item.sku),
    }, el("span", { className: "name" }, item.name),
    el("span", { className: "price" }, money(item.price_cents)), left,
    ...(inCart ? [el("span", { className: "in-cart" }, `${inCart} in cart`)] : []));
    button.setAttribute("aria-label", `Add ${item.name}: ${money(item.price_cents)}, `
      + `${left.textContent}${inCart ? `, ${inCart} in cart` : ""}`);
    button.dataset.sku = item.sku;
    button.dataset.available = String(item.available);
    return el("li", {}, button);
  }));
}

function qtyInput(sku, line) {
  const input = el("input", {
    type: "number", inputMode: "numeric", min: 1, max: Math.max(1, maxQty(sku)),
    value: line.qty, className: "qty-input",
  });
  input.setAttribute("aria-label", `How many ${line.name}`);
  input.addEventListener("input", () => {
    const qty = Number(input.value);
    if (Number.isInteger(qty) && qty >= 1) {
      setQty(sku, Math.min(qty, Math.max(1, maxQty(sku))));
      renderTotal();
      renderItems();
    }
  });
  input.addEventListener("change", () => {
    const qty = Math.floor(Number(input.value));
    const most = maxQty(sku);
    if (!Number.isFinite(qty) || qty <= 0) {
      setQty(sku, 0);
      say(`${line.name} taken out of the cart`);
    } else if (qty > most) {
      setQty(sku, most);
      say(most ? `Only ${most} of ${line.name} can be sold: the cart has ${most}` :
        `${line.name} is sold out`, true);
    } else {
      setQty(sku, qty);
    }
    renderAll();
  });
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") input.blur(); });
  return input;
}

function cartLine(sku, line) {
  const item = itemOf(sku);
  const price = item ? item.price_cents : 0;
  const less = el("button", { type: "button", className: "step", onclick: () => {
    setQty(sku, line.qty - 1);
    renderAll();
  } }, "−");
  less.setAttribute("aria-label", `One less ${line.name}`);
  const more = el("button", { type: "button", className: "step",
    disabled: line.qty >= maxQty(sku), onclick: () => addOne(sku) }, "+");
  more.setAttribute("aria-label", `One more ${line.name}`);
  const li = el("li", {},
    el("span", { className: "line-name" }, line.name),
    el("span", { className: "line-amount" }, `${money(price)} × ${line.qty} = `,
      el("strong", {}, money(price * line.qty))),
    el("span", { className: "qty" }, less, qtyInput(sku, line), more));
  li.dataset.sku = sku;
  return li;
}

function renderTotal() {
  let total = 0;
  for (const [sku, line] of cart) total += (itemOf(sku) || { price_cents: 0 }).price_cents * line.qty;
  $("cart-total").textContent = money(total);
  $("place").disabled = cart.size === 0 || !token;
  $("place").textContent = token ? "Place order" : "Staff only";
  $("clear-cart").disabled = cart.size === 0;
  $("cart-empty").hidden = cart.size > 0;
}

function renderCart() {
  $("cart").replaceChildren(...[...cart].map(([sku, line]) => cartLine(sku, line)));
  renderTotal();
}

function renderAll() { renderItems(); renderCart(); }

// The manifest changed (or came first after a reload): lines no longer on sale leave the
// cart, and staff are told which.
function dropLinesNotOnSale() {
  const gone = [...cart].filter(([sku]) => !itemOf(sku));
  gone.forEach(([sku]) => cart.delete(sku));
  if (!gone.length) return;
  saveCart();
  say(`Taken out of the cart, no longer on sale: ${gone.map(([, line]) => line.name)
    .join(", ")}`, true);
}

async function loadManifest() {
  const { data } = await api("GET", "/api/manifest");
  items = data.items;
  $("items-title").title = data.version ? `manifest ${data.version}` : "no manifest loaded";
  dropLinesNotOnSale();
  renderAll();
}

function clearCart() {
  cart.clear();
  pending = null;
  saveCart();
  renderAll();
  say("Cart cleared");
}

function saleWords(order) {
  return order.payment.method === "card"
    ? `Order #${order.number}: ${money(order.total_cents)} by card. Press Card approved on `
      + "it once the terminal says so."
    : `Order #${order.number}: ${money(order.total_cents)} paid in cash.`;
}

async function placeOrder() {
  if (cart.size === 0) return;
  const lines = [...cart].map(([sku, line]) => ({ sku, qty: line.qty }));
  const method = paymentMethod();
  const key = JSON.stringify([lines, method]);
  if (!pending || pending.key !== key) pending = { order_id: uuid4(), key };
  saveCart();
  const body = { order_id: pending.order_id, lines, payment: { method } };
  $("place").disabled = true;
  let r;
  try {
    r = await api("POST", "/api/orders", body, true);
  } catch (e) {
    say("The kit did not answer; press Place order again (it will not sell twice).", true);
    $("place").disabled = false;
    return;
  }
  pending = null;
  if (r.ok) {
    cart.clear();
    resetPayment();
    rememberOrder(r.data);
    say(saleWords(r.data));
  } else {
    say(r.data.detail, true);
  }
  saveCart();
  renderAll();
  refresh();
}

function wireCart() {
  restoreCart();
  $("place").addEventListener("click", placeOrder);
  $("clear-cart").addEventListener("click", clearCart);
}
