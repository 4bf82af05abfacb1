// The till's confirmation for what moves money or stock back (void, refund, a reservation let
// go): nothing happens on one tap. Staff pick a reason (and for a refund whether the items go
// back on sale); "Go back" or Escape does nothing at all.
"use strict";

const OTHER_REASON = "Other";

// Resolves to {reason, restock} once confirmed, or null when staff went back.
function askConfirm({ title, what, reasons, restock = false, okLabel }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-what").textContent = what;
  $("confirm-ok").textContent = okLabel;
  $("confirm-detail").value = "";
  $("confirm-restock").hidden = !restock;
  $("confirm-restock").querySelectorAll("input").forEach((input) => { input.checked = false; });
  $("confirm-reasons").replaceChildren(el("legend", {}, "Why?"), ...[...reasons, OTHER_REASON]
    .map((reason) => el("label", {}, el("input", { type: "radio", name: "reason",
      value: reason }), ` ${reason === OTHER_REASON ? "Other (say what below)" : reason}`)));

  function chosen() {
    const reason = dialog.querySelector("input[name=reason]:checked");
    const back = dialog.querySelector("input[name=restock]:checked");
    const detail = $("confirm-detail").value.trim();
    const missing = !reason ? "Choose why."
      : reason.value === OTHER_REASON && !detail ? "Say why in Details."
        : restock && !back ? "Choose whether the items go back on sale." : "";
    return { missing, reason: reason && reason.value, detail, back: back && back.value };
  }
  function check() {
    const { missing } = chosen();
    $("confirm-ok").disabled = !!missing;
    $("confirm-need").textContent = missing;
    $("confirm-detail-need").textContent = chosen().reason === OTHER_REASON ? " (needed)"
      : " (if any)";
  }
  check();
  dialog.oninput = check;
  dialog.onchange = check;
  dialog.showModal();
  return new Promise((resolve) => {
    const finish = (answer) => {
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-cancel").onclick = () => finish(null);
    dialog.onclose = () => finish(null); // Escape
    $("confirm-form").onsubmit = (event) => {
      event.preventDefault();
      const answer = chosen();
      if (answer.missing) return;
      const reason = answer.reason === OTHER_REASON ? answer.detail
        : answer.detail ? `${answer.reason}: ${answer.detail}` : answer.reason;
      finish({ reason, restock: answer.back === "yes" });
    };
  });
}
