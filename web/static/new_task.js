// drydock: the new-task form. Repositories are searched as you type; agents, models and
// connectors come from the API; errors appear next to the field they concern.
"use strict";
(function () {
  const d = window.drydock;
  const { el } = d;
  const form = document.getElementById("new-task");
  const repo = document.getElementById("repo");
  const repoOptions = document.getElementById("repo-options");
  const repoState = document.getElementById("repo-state");
  const agentSelect = document.getElementById("agent");
  const modelSelect = document.getElementById("model");
  const agentKey = document.getElementById("agent-key");
  const connectorsBox = document.getElementById("connectors");
  const connectorsNote = document.getElementById("connectors-note");
  const submit = document.getElementById("submit");
  let agents = [];

  // ---- repositories -------------------------------------------------------------------------
  let searchSeq = 0;
  let searchTimer;
  async function searchRepos() {
    const seq = ++searchSeq;
    const q = repo.value.trim();
    repoState.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), " Searching…");
    const r = await d.api("GET", "/api/repos?" + new URLSearchParams(q ? { q } : {}));
    if (seq !== searchSeq) return;
    if (!r.ok) { repoState.textContent = d.errorOf(r).message; return; }
    repoOptions.replaceChildren(...r.data.repos.map((x) => el("option", { value: x.full_name }, x.description || (x.private ? "private" : ""))));
    const n = r.data.repos.length;
    const count = n + (r.data.has_next ? "+" : "");
    repoState.textContent = n === 0 ? "No repository of yours matches."
      : q ? count + (n === 1 && !r.data.has_next ? " repository matches." : " repositories match.")
      : count + " repositories. Type to narrow the list.";
    const exact = r.data.repos.find((x) => x.full_name === q);
    if (exact && exact.default_branch) document.getElementById("base_branch").placeholder = exact.default_branch + " (the default branch)";
  }
  repo.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(searchRepos, 250); });

  // ---- agents and models ----------------------------------------------------------------------
  function showAgent() {
    const agent = agents.find((a) => a.id === agentSelect.value);
    modelSelect.replaceChildren();
    agentKey.hidden = true;
    if (!agent) return;
    for (const m of agent.models) {
      modelSelect.append(el("option", { value: m.id }, m.name + (m.has_key ? "" : " (needs a " + m.provider + " key)")));
    }
    const usable = agent.models.find((m) => m.has_key);
    if (usable) modelSelect.value = usable.id;
    if (agent.missing_providers.length) {
      agentKey.replaceChildren(
        agent.has_key ? "Some models need another key: " : "This agent needs your " + agent.missing_providers.join(" or ") + " API key. ",
        el("a", { href: "/settings/keys" }, "Add a key in Settings → API keys"), ".");
      agentKey.hidden = false;
    }
    connectorsNote.hidden = agent.supports_connectors;
    connectorsNote.textContent = agent.supports_connectors ? "" : agent.name + " cannot use connectors; none will be included.";
  }
  agentSelect.addEventListener("change", showAgent);

  async function loadAgents() {
    const r = await d.api("GET", "/api/agents");
    if (!r.ok) { agentSelect.replaceChildren(el("option", { value: "" }, "Agents could not be loaded")); return; }
    agents = r.data.agents;
    agentSelect.replaceChildren(...agents.map((a) => el("option", { value: a.id }, a.name + (a.has_key ? "" : " (needs a key)"))));
    const first = agents.find((a) => a.has_key) || agents[0];
    if (first) agentSelect.value = first.id;
    showAgent();
  }

  async function loadConnectors() {
    const r = await d.api("GET", "/api/connectors");
    if (!r.ok) { connectorsBox.replaceChildren(el("p", { class: "field-error" }, d.errorOf(r).message)); return; }
    const list = r.data.connectors;
    if (!list.length) {
      connectorsBox.replaceChildren(el("p", { class: "muted" }, "You have no connectors. ", el("a", { href: "/settings/connectors" }, "Add one"), " to give agents more tools."));
      return;
    }
    connectorsBox.replaceChildren(...list.map((c) => el("label", { class: "check" },
      el("input", { type: "checkbox", name: "connectors", value: c.id, checked: c.enabled }),
      el("span", {}, c.name, c.description ? el("span", { class: "muted" }, " — " + c.description) : null,
        c.enabled ? null : el("span", { class: "muted" }, " (disabled)"),
        c.status === "needs_auth" ? el("span", { class: "field-error" }, " (not signed in: it will be left out)") : null,
        c.status === "needs_reauth" ? el("span", { class: "field-error" }, " (needs sign-in again: it will be left out)") : null,
        c.status === "error" ? el("span", { class: "muted" }, " (last test failed)") : null))));
  }

  // ---- submit -------------------------------------------------------------------------------
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    d.clearErrors(form);
    const agent = agents.find((a) => a.id === agentSelect.value);
    const minutes = Number(document.getElementById("max_duration").value);
    const body = {
      repo: repo.value.trim(),
      prompt: document.getElementById("prompt").value,
      agent: agentSelect.value,
      install_deps: document.getElementById("install_deps").checked,
      create_pr: document.getElementById("create_pr").checked,
      keep_alive: document.getElementById("keep_alive").checked,
    };
    const base = document.getElementById("base_branch").value.trim();
    if (base) body.base_branch = base;
    if (modelSelect.value) body.model = modelSelect.value;
    if (minutes > 0) body.max_duration_s = Math.round(minutes * 60);
    body.connectors = agent && !agent.supports_connectors ? [] :
      Array.from(form.querySelectorAll("input[name='connectors']:checked")).map((c) => c.value);
    if (!body.repo) { d.showError(form, { field: "repo", message: "Choose a repository." }); return; }
    if (!body.prompt.trim()) { d.showError(form, { field: "prompt", message: "Say what the agent should do." }); return; }
    d.busy(submit, "Starting…");
    const r = await d.api("POST", "/api/tasks", body);
    if (r.ok) { window.location.href = "/tasks/" + r.data.id; return; }
    d.busy(submit);
    d.showError(form, d.errorOf(r));
  });

  loadAgents();
  loadConnectors();
  if (!repo.value) searchRepos();
})();
