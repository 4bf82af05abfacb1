// The receipts the kit is unsure came out of the printer (GET /api/staff/print-jobs): staff
// look at the printer and answer each one, Reprint (a copy, marked COPY) or Mark checked.
"use strict";

async function loadPrintJobs() {
  if (!token) { $("printjobs-section").hidden = true; return; }
  const r = await api("GET", "/api/staff/print-jobs", undefined, true);
  if (!r.ok) return;
  const jobs = r.data.unsure;
  const names = await Promise.all(jobs.map((job) => orderNamed(job.order_id)));
  $("printjobs").replaceChildren(...jobs.map((job, n) => printJobRow(job, names[n])));
  $("printjobs-section").hidden = jobs.length === 0;
}

function printJobRow(job, orderName) {
  const what = PRINT_KIND_WORDS[job.kind] || "A receipt";
  const li = el("li", { className: "printjob" },
    el("p", { title: `print job ${job.id}: ${job.kind} ${job.state}: ${job.note}` },
      `${what} of ${orderName} may not have printed: ${printNoteWords(job.note || "")}.`),
    el("div", { className: "row" },
      el("button", { type: "button", onclick: () => reprintJob(job, orderName) }, "Reprint"),
      el("button", { type: "button", onclick: () => markChecked(job, orderName) },
        "Mark checked")));
  li.dataset.jobId = String(job.id);
  li.dataset.orderId = job.order_id;
  return li;
}

async function reprintJob(job, orderName) {
  // A reprint settles the order's unsure jobs: the copy is the answer to them all.
  const r = await api("POST", `/api/staff/orders/${job.order_id}/reprint`, {}, true);
  say(r.ok ? `A copy of the receipt of ${orderName} is printing` : r.data.detail, !r.ok);
  loadPrintJobs();
}

async function markChecked(job, orderName) {
  const r = await api("POST", `/api/staff/print-jobs/${job.id}/checked`, undefined, true);
  say(r.ok ? `${PRINT_KIND_WORDS[job.kind] || "The receipt"} of ${orderName}: checked, it `
    + "printed" : r.data.detail, !r.ok);
  loadPrintJobs();
}
