// drydock: a repository's environment page. Saves the configured environment and secrets through
// /api/environments/{owner}/{repo}; secret values are sent once and never shown back.
"use strict";
(function () {
  const d = window.drydock;
  const repo = document.getElementById("env-state").dataset.repo;
  const url = "/api/environments/" + repo;
  const form = document.getElementById("env-form");
  const secretForm = document.getElementById("secret-form");

  function variables() {
    const out = {};
    for (const line of form.querySelector("#env-variables").value.split("\n")) {
      const t = line.trim();
      if (!t) continue;
      const at = t.indexOf("=");
      if (at < 1) return { error: "Write each variable as NAME=value: " + t };
      out[t.slice(0, at).trim()] = t.slice(at + 1);
    }
    return { out };
  }

  function body(extra) {
    const v = variables();
    if (v.error) return v;
    return {
      out: Object.assign({
        image: form.querySelector("#env-image").value || null,
        setup: form.querySelector("#env-setup").value,
        maintenance: form.querySelector("#env-maintenance").value,
        variables: v.out,
      }, extra || {}),
    };
  }

  async function save(target, extra, errorSlot) {
    const b = body(extra);
    const saved = target.querySelector(".saved");
    d.clearErrors(target);
    saved.textContent = "";
    if (b.error) { d.showError(target, { field: errorSlot, message: b.error }); return null; }
    const r = await d.api("PUT", url, b.out);
    if (!r.ok) { d.showError(target, { field: errorSlot, message: d.errorOf(r).message }); return null; }
    saved.textContent = "Saved.";
    return r.data;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await save(form, null, "env");
  });

  secretForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = secretForm.querySelector("#secret-name").value.trim();
    const value = secretForm.querySelector("#secret-value");
    const agent = secretForm.querySelector("#secret-agent").checked;
    const secrets = {};
    secrets[name] = { value: value.value, agent_may_see: agent };
    const data = await save(secretForm, { secrets }, "secret");
    value.value = "";
    if (data) window.location.reload();
  });

  document.querySelectorAll("[data-action='remove-secret']").forEach((button) => {
    button.addEventListener("click", async () => {
      const name = button.closest("li").dataset.name;
      if (!window.confirm("Remove the secret " + name + "?")) return;
      const secrets = {};
      secrets[name] = null;
      const data = await save(secretForm, { secrets }, "secret");
      if (data) window.location.reload();
    });
  });

  document.getElementById("rebuild-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const target = ev.currentTarget;
    const button = document.getElementById("rebuild");
    d.busy(button, "Rebuilding…");
    const r = await d.api("POST", url + "/rebuild");
    d.busy(button);
    if (!r.ok) { target.querySelector(".saved").textContent = d.errorOf(r).message; return; }
    document.getElementById("env-generation").textContent = r.data.generation;
    target.querySelector(".saved").textContent = "The next task on " + repo + " runs setup afresh.";
  });
})();
