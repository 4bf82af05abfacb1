// The till's status strip, on screen whatever is scrolled: the kit's state in a word, badges
// for power, printer, scanner and HQ, the alerts that say what to do (they go when the kit
// says they are over), the shutdown's countdown, and a banner once the kit stops answering.
"use strict";

const HEALTH_EVERY_MS = 5000;
const HEALTH_TIMEOUT_MS = 4000;
let lastHealth = null; // the kit's last answer
let unreachableSince = null; // Date, while the kit does not answer
let shutdownDeadline = null; // performance.now() at which the countdown ends
let shutdownReason = ""; // from the kit's shutdown alert
let countdownTimer = null;

function badge(id, [words, tone], codes) {
  const node = $(id);
  node.textContent = words;
  node.className = `badge ${tone}`;
  node.title = codes;
}

function showStatus(kit) {
  // kit: {status, degraded: {part: reason}, alerts: [...]} (from /api/health or "status").
  const strip = $("kit-status");
  strip.className = `kit-status ${kit.status}`;
  strip.dataset.status = kit.status;
  $("kit-status-word").textContent = STATUS_WORDS[kit.status] || kit.status;
  $("kit-status-word").title = `status ${kit.status}`;
  $("kit-status-parts").replaceChildren(...Object.entries(kit.degraded || {})
    .filter(([part]) => part !== "storage") // the storage warning says it
    .map(([part, reason]) => {
      const li = el("li", { title: reason }, el("strong", {}, `${partName(part)} is not working`),
        `: ${plainReason(reason)}. Sales go on without it.`);
      li.dataset.part = part;
      return li;
    }));
  const alerts = (kit.alerts || [])
    // Degraded parts are listed above; storage has its own warning; the countdown its banner.
    .filter((alert) => !/^(degraded_|storage_|store_)/.test(alert) && alert !== "shutdown_pending")
    .map((alert) => {
      const li = el("li", { title: alert }, alertWords(alert));
      li.dataset.alert = alert;
      return li;
    });
  const battery = lastHealth && batteryAlert(lastHealth.power);
  $("kit-status-alerts").replaceChildren(...alerts, ...(battery ? [battery] : []));
  if (kit.status === "ready" && $("kit-status-alerts").children.length) {
    // All parts run, but staff have something to do (paper, a sensor): not a green "Ready".
    strip.className = "kit-status degraded";
    $("kit-status-word").textContent = STATUS_WORDS.degraded;
  }
  if (kit.status === "stopping") showCountdown(0);
  else if (!(kit.alerts || []).includes("shutdown_pending")) showCountdown(null);
}

function batteryAlert(power) {
  // A low battery while on it: what it means and what to do (it goes once on mains again).
  if (!power || !(power.state || "").includes("OB") || power.battery_level !== "low") return null;
  const li = el("li", { title: `battery_level ${power.battery_level}` },
    `Battery low: ${powerWords(power)[0].replace(/^On battery, /, "")}. Plug in mains power.`);
  li.dataset.alert = "battery_low";
  return li;
}

function showPower(power) {
  badge("power", powerWords(power), `power ${power.state}`
    + (power.battery_level ? ` · battery ${power.battery_level}` : ""));
  if (power.shutdown_in_s !== null && power.shutdown_in_s !== undefined) {
    showCountdown(power.shutdown_in_s);
  }
  const rig = power.simulated_rig;
  if (rig) {
    $("rig").textContent = `Simulated power: ${rig.scenario}, mains ${rig.mains_present
      ? "in" : "out"}, battery ${Math.round(rig.battery_percent)} %, load ${rig.load_amps} A`;
  }
}

function showDevices(health) {
  const printer = health.devices.printer;
  badge("printer", PRINTER_WORDS[printer.state] || [`Printer: ${printer.state}`, "warn"],
    `printer ${printer.state}`);
  const scanners = health.devices.scanners;
  const broken = health.degraded && health.degraded.scanner;
  badge("scanner", broken ? ["Scanner not working", "bad"]
    : scanners.length ? ["Scanner ready", "ok"] : ["No scanner", "warn"],
  scanners.length ? `scanners: ${scanners.join(", ")}` : "no scanner found");
  badge("uplink", hqWords(health), `mode ${health.mode}`
    + (health.mode_reasons.length ? ` (${health.mode_reasons.join(", ")})` : "")
    + ` · uplink ${health.uplink.state}`);
  const waiting = waitingWords(health.waiting);
  $("waiting").hidden = !waiting;
  $("waiting").textContent = waiting;
  $("waiting").title = `outbox: ${health.queue_depth} messages (events too)`;
}

// seconds: the countdown from now; 0 once the shutdown has begun; null: none.
function showCountdown(seconds) {
  clearInterval(countdownTimer);
  countdownTimer = null;
  shutdownDeadline = seconds === null ? null : performance.now() + seconds * 1000;
  $("countdown").hidden = seconds === null;
  if (seconds === null) return;
  const tick = () => {
    const left = (shutdownDeadline - performance.now()) / 1000;
    $("countdown").dataset.seconds = String(Math.max(0, Math.ceil(left)));
    if (left > 0.5) {
      $("countdown").textContent = `Battery critical: the kit shuts down in ${clockWords(left)}`
        + ". Plug in mains power now to stop it.";
    } else {
      $("countdown").textContent = "The kit is shutting down now: no new orders. Its sales "
        + "are kept on it.";
      clearInterval(countdownTimer);
    }
  };
  tick();
  countdownTimer = setInterval(tick, 250);
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
  $("storage").textContent = storage.state === "low" ? "Storage low" : "Storage: orders refused";
  $("storage").title = `storage ${storage.state}`;
  $("storage-warning").textContent = words(storage);
}

function showUnreachable() {
  if (unreachableSince === null) unreachableSince = new Date();
  const strip = $("kit-status");
  const wasStopping = strip.dataset.status === "stopping" || shutdownDeadline !== null
    || (strip.dataset.status === "unreachable" && strip.dataset.stopped === "1");
  strip.className = "kit-status unreachable";
  strip.dataset.status = "unreachable";
  strip.dataset.stopped = wasStopping ? "1" : "";
  showCountdown(null);
  // What the kit said last may no longer hold: only the banner speaks until it answers.
  $("kit-status-parts").replaceChildren();
  $("kit-status-alerts").replaceChildren();
  const since = unreachableSince.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  $("kit-status-word").textContent = "No answer from the kit";
  $("unreachable").hidden = false;
  $("unreachable").textContent = wasStopping
    ? `The kit shut down${shutdownReason.startsWith("battery") ? " for its battery" : ""} and `
      + `has not answered since ${since}. Its sales are kept on it: start it again on mains `
      + "power. Nothing on this page is up to date."
    : `The kit has not answered since ${since}: check its power and that this tablet is on `
      + "the kit's Wi-Fi. Nothing on this page is up to date; sales wait until it answers.";
  document.body.classList.add("stale");
}

function showReachable() {
  const wasAway = unreachableSince !== null;
  unreachableSince = null;
  $("unreachable").hidden = true;
  document.body.classList.remove("stale");
  return wasAway;
}

async function loadHealth() {
  let data = null;
  try {
    const response = await fetch("/api/health",
      { signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
    if (response.ok) data = await response.json();
  } catch (e) {
    data = null; // gone, or too slow to count as there
  }
  if (!data) { showUnreachable(); return; } // gone, or closing its store as it shuts down
  lastHealth = data;
  if (showReachable()) { refresh(); listen(); } // back: what happened meanwhile, a new stream
  $("kit").textContent = `dropkit till · ${data.kit_id}${data.simulated ? " (simulator)" : ""}`;
  showPower(data.power);
  if ((data.power.state || "").split(" ").includes("LB")) shutdownReason = "battery";
  if (data.power.shutdown_in_s === null) showCountdown(null);
  showStatus(data);
  showDevices(data);
  showStorage(data.storage);
  $("sim").hidden = !(data.simulated && token);
  $("latch").textContent = data.staff_latch ? "Release offline latch" : "Force offline";
  $("latch").dataset.latched = data.staff_latch ? "1" : "";
  showManifestConflict(data.manifest.conflict);
}

function watchHealth() {
  setTimeout(async () => { await loadHealth(); watchHealth(); }, HEALTH_EVERY_MS);
}

// A power alert from the stream: the countdown starts at once (health follows).
function powerAlert(data) {
  if (data.type === "shutdown_pending" && typeof data.in_s === "number") showCountdown(data.in_s);
  if (data.type === "shutdown") { shutdownReason = data.reason || ""; showCountdown(0); }
}
