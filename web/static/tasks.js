// drydock: the tasks list. Status changes arrive over SSE and the list redraws without a reload.
"use strict";
(function () {
  const d = window.drydock;
  const { el } = d;
  const rows = document.getElementById("task-rows");
  const empty = document.getElementById("empty");
  const form = document.getElementById("filters");
  const liveState = document.getElementById("live-state");
  const flash = document.getElementById("flash");
  const github = document.getElementById("tasks").dataset.github;

  function filters() {
    const f = new FormData(form);
    return { status: f.get("status") || "", repo: (f.get("repo") || "").trim() };
  }

  // Where a task came from, when not this page: "via github" (linked to its source), "via cli"…
  function origin(t) {
    if (!t.origin || t.origin === "web") return null;
    const safe = /^https?:\/\//.test(t.source_url || "");
    const label = "via " + t.origin;
    return el("span", { class: "origin muted" }, " ", safe ? el("a", { href: t.source_url }, label) : label);
  }

  // The gateway's metered use, as the server renders it ("11 in · 7 out · $0.0001").
  function usage(u) {
    if (!u || u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens === 0) {
      return el("span", { class: "muted" }, "—");
    }
    let s = u.input_tokens + " in · " + u.output_tokens + " out";
    if (u.cache_read_tokens + u.cache_write_tokens > 0) {
      s += " · " + u.cache_read_tokens + " cache read · " + u.cache_write_tokens + " cache write";
    }
    return s + " · $" + u.cost_usd.toFixed(4);
  }

  function row(t) {
    const branch = t.pr_url
      ? el("a", { href: t.pr_url }, "PR #" + t.pr_number)
      : t.branch ? el("a", { href: github + "/" + t.repo + "/tree/" + t.branch }, el("code", {}, t.branch)) : el("span", { class: "muted" }, "—");
    const actions = el("td", { class: "actions" },
      d.isActive(t.status) ? el("button", { type: "button", class: "secondary small", dataset: { action: "stop" }, "aria-label": "Stop task " + t.title }, "Stop") : null,
      el("button", { type: "button", class: "danger small", dataset: { action: "delete" }, "aria-label": "Delete task " + t.title }, "Delete"));
    return el("tr", { dataset: { id: t.id, status: t.status, started: t.started_at || "", finished: t.finished_at || "" } },
      el("td", { "data-label": "Status" }, Object.assign(d.badge(t.status), { title: t.status_reason || "" })),
      el("td", { "data-label": "Task", class: "task-title" }, el("a", { href: "/tasks/" + t.id, title: t.prompt }, t.title), origin(t)),
      el("td", { "data-label": "Repository" }, t.repo),
      el("td", { "data-label": "Agent" }, t.agent, t.model ? el("span", { class: "muted" }, " / " + t.model) : null),
      el("td", { "data-label": "Branch / PR" }, branch),
      el("td", { "data-label": "Started" }, d.timeEl(t.started_at || t.created_at, true)),
      el("td", { "data-label": "Duration", class: "duration" }, duration(t.started_at, t.finished_at, t.status)),
      el("td", { "data-label": "Model use", class: "usage" }, usage(t.usage)),
      actions);
  }

  function duration(started, finished, status) {
    started = Number(started) || 0;
    finished = Number(finished) || 0;
    if (!started) return "";
    if (finished) return d.fmtDuration(finished - started);
    return d.isActive(status) ? d.fmtDuration(Date.now() - started) : "";
  }

  // Pages of 50 shown so far ("Show older tasks" adds one); a reload refetches them all.
  const PER_PAGE = 50;
  let pages = 1;
  const more = document.getElementById("more");
  let loading = null;
  async function reload() {
    if (loading) { loading.again = true; return; }
    loading = { again: false };
    const f = filters();
    const tasks = [];
    let hasNext = false;
    let ok = true;
    for (let page = 1; page <= pages; page++) {
      const q = new URLSearchParams({ per_page: String(PER_PAGE), page: String(page) });
      if (f.status) q.set("status", f.status);
      if (f.repo) q.set("repo", f.repo);
      const r = await d.api("GET", "/api/tasks?" + q);
      if (!r.ok) { ok = false; break; }
      tasks.push(...r.data.tasks);
      hasNext = r.data.has_next;
      if (!hasNext) break;
    }
    if (ok) {
      rows.replaceChildren(...tasks.map(row));
      empty.hidden = tasks.length > 0;
      document.getElementById("tasks").hidden = !empty.hidden;
      if (!empty.hidden) empty.textContent = f.status || f.repo ? "No tasks match these filters." : "No tasks yet.";
      more.hidden = !hasNext;
    }
    const again = loading.again;
    loading = null;
    if (again) reload();
  }
  more.addEventListener("click", async () => {
    pages += 1;
    d.busy(more, "Loading…");
    await reload();
    d.busy(more);
  });

  // Live status: update the badge at once, then refetch for branch, PR and timings.
  function connect() {
    const es = new EventSource("/api/tasks/events");
    let dropped = false;
    es.addEventListener("open", () => {
      liveState.textContent = "Live";
      // Changes made while the stream was down were missed: catch up.
      if (dropped) { dropped = false; reload(); }
    });
    es.addEventListener("status", (ev) => {
      let change;
      try { change = JSON.parse(ev.data); } catch (_) { return; }
      const tr = rows.querySelector("tr[data-id='" + CSS.escape(change.task_id) + "']");
      if (tr) {
        tr.dataset.status = change.status;
        tr.querySelector(".badge").replaceWith(d.badge(change.status));
        // Say it for screen readers too (the live region next to the filters).
        liveState.textContent = "\u201c" + tr.querySelector(".task-title a").textContent + "\u201d: " + d.statusLabel(change.status);
      }
      reload();
      d.refreshQuota();
    });
    es.addEventListener("resync", () => reload());
    es.addEventListener("error", () => { dropped = true; liveState.textContent = "Reconnecting…"; });
  }

  // Durations of running tasks tick every second.
  setInterval(() => {
    rows.querySelectorAll("tr[data-status='running']").forEach((tr) => {
      const cell = tr.querySelector(".duration");
      if (cell) cell.textContent = duration(tr.dataset.started, tr.dataset.finished, "running");
    });
  }, 1000);

  function say(text, isError) {
    flash.textContent = text;
    flash.classList.toggle("error", !!isError);
    flash.hidden = false;
  }

  rows.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const tr = button.closest("tr");
    const id = tr.dataset.id;
    const title = tr.querySelector(".task-title a").textContent;
    if (button.dataset.action === "stop") {
      if (!window.confirm("Stop the task \u201c" + title + "\u201d? The agent is interrupted and its sandbox removed.")) return;
      d.busy(button, "Stopping…");
      const r = await d.api("POST", "/api/tasks/" + id + "/stop");
      if (!r.ok) { d.busy(button); say(d.errorOf(r).message, true); return; }
      say("Stopped \u201c" + title + "\u201d.");
    } else if (button.dataset.action === "delete") {
      if (!window.confirm("Delete the task \u201c" + title + "\u201d with its log? This cannot be undone.")) return;
      d.busy(button, "Deleting…");
      const r = await d.api("DELETE", "/api/tasks/" + id);
      if (!r.ok) { d.busy(button); say(d.errorOf(r).message, true); return; }
      say("Deleted \u201c" + title + "\u201d.");
    }
    reload();
  });

  // Filters apply as they change; the URL keeps them for reloads and links.
  function applyFilters() {
    pages = 1;
    const f = filters();
    const q = new URLSearchParams();
    if (f.status) q.set("status", f.status);
    if (f.repo) q.set("repo", f.repo);
    history.replaceState(null, "", q.toString() ? "/?" + q : "/");
    reload();
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
  form.querySelector("#filter-status").addEventListener("change", applyFilters);
  let typing;
  form.querySelector("#filter-repo").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(applyFilters, 300); });

  connect();
})();
