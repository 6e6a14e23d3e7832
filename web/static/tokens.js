// drydock: Settings → API tokens. A new token is shown once, with a copy button; tokens are
// revoked in place.
"use strict";
(function () {
  const d = window.drydock;
  const form = document.getElementById("new-token");
  const shown = document.getElementById("new-token-value");
  const value = document.getElementById("token-value");
  const copied = document.getElementById("copied");

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    d.clearErrors(form);
    const submit = form.querySelector("button[type='submit']");
    d.busy(submit, "Creating…");
    const r = await d.api("POST", "/api/tokens", {
      name: form.elements.name.value,
      scope: form.elements.scope.value,
      expires_in_days: Number(form.elements.expires_in_days.value) || undefined,
    });
    d.busy(submit);
    if (!r.ok) { d.showError(form, d.errorOf(r)); return; }
    const t = r.data;
    const { el } = d;
    document.getElementById("tokens").prepend(el("li", { class: "card", dataset: { id: t.id } },
      el("div", { class: "card-head" }, el("h2", { class: "card-title" }, t.name),
        el("p", {}, el("span", { class: "badge badge-ok" }, t.scope), " ", el("code", {}, t.hint + "\u2026"))),
      el("p", { class: "muted" }, "Created just now \u00b7 never used \u00b7 expires ", d.timeEl(t.expires_at)),
      el("div", { class: "card-actions" }, el("button", { type: "button", class: "danger small", dataset: { action: "revoke" }, "aria-label": "Revoke the token " + t.name }, "Revoke"))));
    document.getElementById("no-tokens").hidden = true;
    value.value = t.token;
    copied.textContent = "";
    shown.hidden = false;
    value.focus();
    value.select();
    form.reset();
  });

  document.getElementById("copy-token").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value.value);
      copied.textContent = "Copied.";
    } catch (_) {
      value.select();
      copied.textContent = "Press Ctrl+C (or ⌘C) to copy.";
    }
  });

  document.getElementById("tokens").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action='revoke']");
    if (!button) return;
    const card = button.closest("li");
    const name = card.querySelector(".card-title").textContent;
    if (!window.confirm("Revoke the token \u201c" + name + "\u201d? Scripts using it stop working at once.")) return;
    d.busy(button, "Revoking…");
    const r = await d.api("DELETE", "/api/tokens/" + encodeURIComponent(card.dataset.id));
    if (!r.ok) { d.busy(button); window.alert(d.errorOf(r).message); return; }
    card.remove();
    document.getElementById("no-tokens").hidden = document.querySelectorAll("#tokens li").length > 0;
  });
})();
