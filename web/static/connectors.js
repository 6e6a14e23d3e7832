// drydock: Settings → Connectors. List, add (from a preset or blank), edit, enable or disable,
// test and delete MCP connectors. Secret values are write-only.
"use strict";
(function () {
  const d = window.drydock;
  const { el } = d;
  const list = document.getElementById("connectors");
  const flash = document.getElementById("flash");
  const presetSelect = document.getElementById("preset");
  const dialog = document.getElementById("editor");
  const form = document.getElementById("connector-form");
  const title = document.getElementById("editor-title");
  const presetHelp = document.getElementById("preset-help");
  const existing = document.getElementById("c-existing");
  const secrets = document.getElementById("c-secrets");
  const secretsLabel = document.getElementById("c-secrets-label");
  const save = document.getElementById("c-save");
  let presets = [];
  let connectors = [];
  let editing = null; // the connector being edited, or null when adding
  const lastTests = new Map(); // id -> test outcome shown under the card

  function say(text, isError) {
    flash.textContent = text;
    flash.classList.toggle("error", !!isError);
    flash.hidden = !text;
  }

  // ---- list ---------------------------------------------------------------------------------
  // The connector's state from the API: connected, needs_auth, needs_reauth, error, disabled.
  const STATUS_TEXT = { connected: "connected", needs_auth: "not signed in", needs_reauth: "sign in again", error: "error", disabled: "disabled" };
  const STATUS_CLASS = { connected: "badge-ok", needs_auth: "badge-none", needs_reauth: "badge-stopped", error: "badge-error", disabled: "badge-disabled" };
  function statusBadge(c) {
    if (c.status === "connected" && !c.last_status) return el("span", { class: "badge badge-none", dataset: { status: c.status } }, "not tested");
    return el("span", { class: "badge " + (STATUS_CLASS[c.status] || "badge-none"), dataset: { status: c.status } }, STATUS_TEXT[c.status] || c.status);
  }

  function testView(outcome) {
    if (!outcome) return null;
    if (outcome.pending) return el("p", { class: "test-result muted", role: "status" }, el("span", { class: "spinner", "aria-hidden": "true" }), " Testing… connecting and listing tools");
    if (outcome.status === "ok") {
      return el("div", { class: "test-result", role: "status" },
        el("p", {}, el("strong", { class: "adds" }, "Connected"), outcome.server ? " to " + outcome.server : "", " — ", outcome.tools.length + (outcome.tools.length === 1 ? " tool" : " tools"), outcome.transport_used ? " over " + outcome.transport_used : "", "."),
        outcome.tools.length ? el("ul", {}, ...outcome.tools.map((t) => el("li", {}, el("code", {}, t.name), t.description ? " — " + t.description : ""))) : null);
    }
    return el("div", { class: "test-result", role: "status" }, el("p", { class: "field-error" }, "Test failed: " + (outcome.error || "unknown error")));
  }

  function card(c) {
    const where = c.transport === "http" ? c.url : [c.command].concat(c.args || []).join(" ");
    const secretNames = (c.transport === "http" ? c.headers : c.env).map((s) => s.name);
    const meta = [c.transport === "http" ? "HTTP" : "stdio", where];
    if (c.tool_count !== null && c.tool_count !== undefined) meta.push(c.tool_count + (c.tool_count === 1 ? " tool" : " tools"));
    if (secretNames.length) meta.push((c.transport === "http" ? "headers: " : "env: ") + secretNames.join(", "));
    if (c.auth === "oauth") meta.push(c.oauth_issuer ? "OAuth via " + c.oauth_issuer : "OAuth");
    const oauth = c.auth === "oauth";
    const toggle = el("input", { type: "checkbox", checked: c.enabled, "aria-describedby": "desc-" + c.id });
    toggle.addEventListener("change", () => setEnabled(c, toggle));
    return el("li", { class: "card connector", dataset: { id: c.id, name: c.name } },
      el("div", { class: "card-head" },
        el("h3", { class: "card-title" }, c.name),
        statusBadge(c)),
      c.description ? el("p", { id: "desc-" + c.id }, c.description) : el("p", { id: "desc-" + c.id, class: "visually-hidden" }, c.name),
      el("p", { class: "connector-meta" }, meta.join(" · ")),
      c.status === "needs_reauth" ? el("p", { class: "field-error" }, "Sign in again: " + (c.status_detail || "the authorization was refused")) : null,
      c.status === "needs_auth" ? el("p", { class: "help" }, "Use Connect to sign in to this server.") : null,
      c.paused_until ? el("p", { class: "field-error" }, "Paused until ", d.timeEl(c.paused_until), " after repeated failures to reach the server.") : null,
      c.last_status === "error" && c.last_error && !lastTests.has(c.id) ? el("p", { class: "field-error" }, "Last test: " + c.last_error) : null,
      c.last_checked_at ? el("p", { class: "help" }, "Last tested ", d.timeEl(c.last_checked_at)) : null,
      el("div", { class: "card-actions" },
        el("label", { class: "check" }, toggle, " Enabled"),
        oauth ? el("button", { type: "button", class: c.status === "needs_auth" || c.status === "needs_reauth" ? "small" : "secondary small", dataset: { action: "connect" } }, c.oauth_issuer ? "Reconnect" : "Connect") : null,
        el("button", { type: "button", class: "secondary small", dataset: { action: "test" } }, "Test"),
        el("button", { type: "button", class: "secondary small", dataset: { action: "edit" } }, "Edit"),
        el("button", { type: "button", class: "danger small", dataset: { action: "delete" } }, "Delete")),
      testView(lastTests.get(c.id)));
  }

  function render() {
    list.removeAttribute("aria-busy");
    if (!connectors.length) {
      list.replaceChildren(el("li", { class: "empty" }, "No connectors yet. Add one below."));
      return;
    }
    list.replaceChildren(...connectors.map(card));
  }

  async function reload() {
    const r = await d.api("GET", "/api/connectors");
    if (!r.ok) { list.replaceChildren(el("li", { class: "field-error" }, d.errorOf(r).message)); return; }
    connectors = r.data.connectors;
    render();
  }

  async function setEnabled(c, toggle) {
    toggle.disabled = true;
    const r = await d.api("PATCH", "/api/connectors/" + c.id, { enabled: toggle.checked });
    toggle.disabled = false;
    if (!r.ok) { toggle.checked = !toggle.checked; say(d.errorOf(r).message, true); return; }
    say(c.name + (toggle.checked ? " is enabled." : " is disabled."));
    reload();
  }

  list.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const li = button.closest("li");
    const c = connectors.find((x) => x.id === li.dataset.id);
    if (!c) return;
    if (button.dataset.action === "test") {
      lastTests.set(c.id, { pending: true });
      render();
      const r = await d.api("POST", "/api/connectors/" + c.id + "/test");
      lastTests.set(c.id, r.ok ? r.data : { status: "error", error: d.errorOf(r).message });
      await reload();
      const again = list.querySelector("li[data-id='" + CSS.escape(c.id) + "'] button[data-action='test']");
      if (again) again.focus();
    } else if (button.dataset.action === "connect") {
      d.busy(button, "Connecting…");
      const r = await d.api("POST", "/api/connectors/" + c.id + "/oauth/start");
      if (!r.ok) { d.busy(button); say(d.errorOf(r).message, true); return; }
      window.location.assign(r.data.authorization_url);
    } else if (button.dataset.action === "edit") {
      openEditor(c, null);
    } else if (button.dataset.action === "delete") {
      if (!window.confirm("Delete the connector " + c.name + "? Tasks already run keep their logs.")) return;
      d.busy(button, "Deleting…");
      const r = await d.api("DELETE", "/api/connectors/" + c.id);
      if (!r.ok) { d.busy(button); say(d.errorOf(r).message, true); return; }
      lastTests.delete(c.id);
      say("Deleted " + c.name + ".");
      reload();
    }
  });

  // ---- editor -------------------------------------------------------------------------------
  function transport() { return form.querySelector("input[name='transport']:checked").value; }
  function showTransport() {
    const t = transport();
    form.querySelectorAll("[data-transport]").forEach((f) => { f.hidden = f.dataset.transport !== t; });
    secretsLabel.replaceChildren(...(t === "http"
      ? ["Headers, one ", el("code", {}, "Name: value"), " per line"]
      : ["Environment variables, one ", el("code", {}, "NAME=value"), " per line"]));
    showExisting();
  }
  form.querySelectorAll("input[name='transport']").forEach((r) => r.addEventListener("change", showTransport));

  function showExisting() {
    existing.replaceChildren();
    if (!editing || editing.transport !== transport()) return;
    const entries = editing.transport === "http" ? editing.headers : editing.env;
    for (const s of entries) {
      existing.append(el("label", { class: "check" },
        el("input", { type: "checkbox", name: "remove-secret", value: s.name }),
        el("span", {}, "Remove ", el("code", {}, s.name), el("span", { class: "muted" }, s.hint ? " (ends in " + s.hint + ")" : " (set)"))));
    }
    if (entries.length) existing.prepend(el("p", { class: "help" }, "Stored values stay unless you replace them below or remove them here."));
  }

  function openEditor(c, preset) {
    editing = c;
    form.reset();
    d.clearErrors(form);
    presetHelp.hidden = true;
    title.textContent = c ? "Edit " + c.name : preset ? "Add " + preset.title : "Add a connector";
    const src = c || preset || {};
    form.elements.name.value = src.name || "";
    form.elements.description.value = src.description || "";
    form.querySelector("input[name='transport'][value='" + (src.transport || "http") + "']").checked = true;
    form.elements.url.value = src.url || "";
    form.querySelector("input[name='auth'][value='" + (src.auth || "headers") + "']").checked = true;
    form.elements.command.value = src.command || "";
    form.elements.args.value = (src.args || []).join("\n");
    document.getElementById("c-enabled").checked = c ? c.enabled : true;
    if (preset && preset.fields.length) {
      secrets.value = preset.fields.map((f) => f.kind === "header" ? f.name + ": " : f.name + "=").join("\n");
      presetHelp.replaceChildren(...preset.fields.map((f) => el("span", { class: "preset-field" }, el("code", {}, f.name), (f.required ? " (required): " : " (optional): ") + f.help + (f.placeholder ? ", e.g. " + f.placeholder : "") + ". ")),
        preset.docs_url ? el("a", { href: preset.docs_url, rel: "noopener noreferrer" }, "Documentation") : "");
      presetHelp.hidden = false;
    }
    showTransport();
    dialog.showModal();
    form.elements.name.focus();
  }

  document.getElementById("add").addEventListener("click", () => {
    openEditor(null, presets.find((p) => p.id === presetSelect.value) || null);
  });
  document.getElementById("c-cancel").addEventListener("click", () => dialog.close());

  /** Parses `Name: value` (headers) or `NAME=value` (env) lines; lines without a value are skipped. */
  function parseSecrets(text, kind) {
    const out = {};
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line) continue;
      const at = kind === "http" ? line.indexOf(":") : line.indexOf("=");
      if (at <= 0) throw new Error("Write each line as " + (kind === "http" ? "Name: value" : "NAME=value") + ": " + line.slice(0, 40));
      const name = line.slice(0, at).trim();
      const value = line.slice(at + 1).trim();
      if (value) out[name] = value;
    }
    return out;
  }

  const fieldMap = { env: "secrets", headers: "secrets" };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    d.clearErrors(form);
    const t = transport();
    let values;
    try { values = parseSecrets(secrets.value, t); } catch (err) { d.showError(form, { field: "secrets", message: err.message }); return; }
    const body = {
      name: form.elements.name.value.trim(),
      description: form.elements.description.value.trim(),
      transport: t,
      enabled: document.getElementById("c-enabled").checked,
    };
    if (t === "http") {
      body.url = form.elements.url.value.trim();
      body.auth = form.querySelector("input[name='auth']:checked").value;
    }
    else {
      body.command = form.elements.command.value.trim();
      body.args = form.elements.args.value.split("\n").map((a) => a.trim()).filter(Boolean);
    }
    const secretKey = t === "http" ? "headers" : "env";
    let r;
    d.busy(save, "Saving…");
    if (editing) {
      const changes = { ...values };
      form.querySelectorAll("input[name='remove-secret']:checked").forEach((c) => { if (!(c.value in changes)) changes[c.value] = null; });
      body[secretKey] = changes;
      r = await d.api("PATCH", "/api/connectors/" + editing.id, body);
    } else {
      body[secretKey] = values;
      r = await d.api("POST", "/api/connectors", body);
    }
    d.busy(save);
    if (!r.ok) {
      const e = d.errorOf(r);
      const field = e.field ? e.field.split(".")[0] : null;
      d.showError(form, { ...e, field: field ? (fieldMap[field] || field) : null });
      return;
    }
    dialog.close();
    say((editing ? "Saved " : "Added ") + r.data.name + ". Use Test to check that it connects.");
    await reload();
    const added = list.querySelector("li[data-id='" + CSS.escape(r.data.id) + "'] button[data-action='test']");
    if (added) added.focus();
  });

  async function loadPresets() {
    const r = await d.api("GET", "/api/connectors/catalog");
    if (!r.ok) return;
    presets = r.data.presets;
    presetSelect.append(...presets.map((p) => el("option", { value: p.id }, p.title + " — " + p.description)));
  }

  loadPresets();
  const connected = new URLSearchParams(window.location.search).get("connected");
  reload().then(() => {
    const c = connectors.find((x) => x.id === connected);
    if (c) say(c.status === "connected" ? "Connected " + c.name + "." : "Signed in to " + c.name + ", but its test failed: " + (c.last_error || c.status), c.status !== "connected");
  });
})();
