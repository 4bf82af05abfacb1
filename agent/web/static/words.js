// The till's plain words: what staff read for each code the kit's API answers. Every function
// here returns words only; the code itself goes in a tooltip (title) where the words are shown.
"use strict";

const PART_NAMES = {
  power: "Power monitor", power_rig: "Simulated power supply", printer: "Receipt printer",
  scanner: "Barcode scanner", panel: "Button panel", uplink: "Connection to HQ",
  uplink_drain: "Sending orders to HQ", telemetry: "Power reports to HQ",
  uplink_health: "HQ connection check", uplink_keepalive: "HQ connection keep-alive",
  reconcile: "Checking HQ's answers", events: "Event log", holds: "Reservation expiry",
  storage_watch: "Storage check", power_fail_line: "Power-fail line",
};

const STATUS_WORDS = {
  ready: "Ready: taking orders",
  degraded: "Taking orders, but something needs attention",
  stopping: "Shutting down: no new orders",
};

// Each alert the kit keeps while it lasts (health "alerts"): what it is, and what to do.
const ALERT_WORDS = {
  printer_paper_out: "Printer is out of paper: put in a new roll; the receipts wait and "
    + "print then",
  printer_cover_open: "Printer cover is open: close it; the receipts wait and print then",
  printer_offline: "Printer is not answering: check its power and cable; the receipts wait",
  manifest_conflict: "The manifest file was not loaded (it allows less than was sold): the "
    + "kit sells from the one it had; load a corrected one",
};
const SENSOR_WORDS = {
  mains: "the kit cannot tell whether mains power is in",
  battery: "the battery side cannot be read",
  gauge: "the battery level is not known",
};

const PRINTER_WORDS = {
  disabled: ["No printer set up", "off"], unknown: ["Printer: checking", "off"],
  ready: ["Printer ready", "ok"], paper_near_end: ["Printer: paper running low", "warn"],
  paper_out: ["Printer: out of paper", "bad"], cover_open: ["Printer: cover open", "bad"],
  offline: ["Printer not answering", "bad"], not_responding: ["Printer not answering", "bad"],
};

const PRINT_KIND_WORDS = {
  receipt: "The receipt", reprint: "The copy of the receipt", unpaid: "The NOT PAID slip",
  void: "The VOID slip", refund: "The REFUND slip",
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
    const sensor = alert.slice("power_sensor_".length);
    return `Power sensor "${sensor}" is not answering: ${SENSOR_WORDS[sensor]
      || "a power reading is missing"}; check the power board's cable`;
  }
  return `Something needs attention (${alert.replaceAll("_", " ")})`;
}

function durationWords(minutes) {
  const whole = Math.max(1, Math.round(minutes));
  if (whole < 60) return `${whole} min`;
  const rest = whole % 60;
  return `${Math.floor(whole / 60)} h${rest ? ` ${rest} min` : ""}`;
}

function clockWords(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// The power badge: [words, tone]; "OB DISCHRG LB" is "On battery, 62 %, about 40 min left".
function powerWords(power) {
  const flags = new Set((power && power.state || "unknown").split(" "));
  if (flags.has("unknown")) return ["Power: not known yet", "off"];
  const ups = power.ups || {};
  const percent = ups.percent === null || ups.percent === undefined ? null
    : `${Math.round(ups.percent)} %`;
  if (flags.has("FSD")) return ["Shutting down for the battery", "bad"];
  if (flags.has("OB")) {
    const left = ups.minutes_left === null || ups.minutes_left === undefined ? ""
      : `, about ${durationWords(ups.minutes_left)} left`;
    const low = ["low", "critical"].includes(power.battery_level);
    return [`On battery${percent ? `, ${percent}` : ""}${left}`, low ? "bad" : "warn"];
  }
  const battery = percent ? `, battery ${percent}${flags.has("CHRG") ? " (charging)" : ""}` : "";
  return [`On mains${battery}`, "ok"];
}

// The HQ badge, from the mode and the uplink: [words, tone].
function hqWords(health) {
  const reasons = health.mode_reasons || [];
  if (health.mode === "online") return ["HQ connected", "ok"];
  if (reasons.includes("staff_latch")) return ["Offline (by staff): sales kept here", "warn"];
  if (reasons.includes("uplink_off")) return ["No HQ link set up: sales kept here", "off"];
  if (health.uplink && health.uplink.state === "connecting") return ["Connecting to HQ…", "warn"];
  return ["HQ not reachable: sales kept here", "warn"];
}

function plural(count, one, many) { return `${count} ${count === 1 ? one : many}`; }

// "2 sales waiting to reach HQ" (and the voids and refunds); empty when none waits.
function waitingWords(waiting) {
  if (!waiting) return "";
  const parts = [];
  if (waiting.sale) parts.push(plural(waiting.sale, "sale", "sales"));
  if (waiting.refund) parts.push(plural(waiting.refund, "refund", "refunds"));
  if (waiting.void) parts.push(plural(waiting.void, "void", "voids"));
  return parts.length ? `${parts.join(" and ")} waiting to reach HQ` : "";
}

// An order's state as staff say it: [words, tone]; the codes go in the tooltip.
function orderStateWords(order) {
  const method = order.payment.method === "card" ? "card" : "cash";
  if (order.status === "voided") return ["Voided", "off"];
  if (order.status === "refunded") return ["Refunded", "off"];
  if (order.payment.status === "pending") return ["Card: waiting for the terminal", "warn"];
  if (order.payment.status === "failed") return ["Card declined: not paid", "bad"];
  const paid = `Paid ${method}`;
  return {
    queued: [`${paid} — sent to HQ later`, "ok"],
    relayed: [`${paid} — sent to HQ`, "ok"],
    reconciled: [`${paid} — at HQ`, "ok"],
    rejected: [`${paid} — HQ refused it`, "bad"],
    refund_due: [`${paid} — HQ never confirmed it: refund due`, "bad"],
  }[order.status] || [paid, "ok"];
}

function orderCodes(order) {
  return `status ${order.status} · payment ${order.payment.method || "none"} `
    + `${order.payment.status}${order.receipt ? ` · receipt link ${order.receipt.seq}` : ""}`;
}

// Why a print job is unsure, from the kit's note (the note itself goes in the tooltip).
function printNoteWords(note) {
  if (/kit stopped/.test(note)) return "the kit stopped while printing it";
  const after = /printer was (\w+) right after/.exec(note);
  if (after) {
    const [words] = PRINTER_WORDS[after[1]] || ["Printer stopped"];
    return `the printer stopped right after it (${words.replace(/^Printer:? ?/, "")
      .toLowerCase()})`;
  }
  if (/sending the receipt failed/.test(note)) return "the printer's connection broke while "
    + "printing it";
  return "the kit could not tell whether it printed";
}
