// drydock: Settings → API keys. Keys are set, replaced and removed in place; values are never
// shown back and the input is cleared after saving.
"use strict";
(function () {
  const d = window.drydock;
  const { el } = d;

  function showState(form, entry) {
    const provider = entry.provider;
    const state = document.getElementById("state-" + provider);
    state.replaceChildren(...(entry.configured
      ? [el("span", { class: "badge badge-ok" }, "configured"), " ", el("span", { class: "muted" }, "ends in ", el("code", {}, entry.hint), ", updated ", d.timeEl(entry.updated_at))]
      : [el("span", { class: "badge badge-none" }, "not set")]));
    form.querySelector("label").textContent = entry.configured ? "Replace the " + provider + " key" : provider + " key";
    form.querySelector("button[type='submit']").textContent = entry.configured ? "Replace" : "Save";
    form.querySelector("button[data-action='remove']").hidden = !entry.configured;
  }

  document.querySelectorAll("form.key-form").forEach((form) => {
    const provider = form.dataset.provider;
    const input = form.querySelector("input[name='key']");
    const saved = form.querySelector(".saved");
    const save = form.querySelector("button[type='submit']");
    const remove = form.querySelector("button[data-action='remove']");
    const errorSlot = "key-" + provider;

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      d.clearErrors(form);
      saved.textContent = "";
      if (!input.value.trim()) { d.showError(form, { field: errorSlot, message: "Paste the key first." }); return; }
      d.busy(save, "Saving…");
      const r = await d.api("PUT", "/api/keys/" + encodeURIComponent(provider), { key: input.value });
      d.busy(save);
      if (!r.ok) {
        const e = d.errorOf(r);
        d.showError(form, { field: errorSlot, message: e.message });
        return;
      }
      input.value = "";
      showState(form, r.data);
      saved.textContent = "Saved. The key ends in " + r.data.hint + ".";
    });

    remove.addEventListener("click", async () => {
      if (!window.confirm("Remove your " + provider + " key? Tasks that need it will not start until you add one again.")) return;
      d.clearErrors(form);
      d.busy(remove, "Removing…");
      const r = await d.api("DELETE", "/api/keys/" + encodeURIComponent(provider));
      d.busy(remove);
      if (!r.ok) { d.showError(form, { field: errorSlot, message: d.errorOf(r).message }); return; }
      showState(form, { provider, configured: false });
      saved.textContent = "Removed.";
    });
  });
})();
