// drydock: one task. The log streams over SSE (replayed from the start, then live); the header
// follows status changes; the changes load when the agent is done.
"use strict";
(function () {
  const d = window.drydock;
  const { el } = d;
  const article = document.getElementById("task");
  const id = article.dataset.id;
  const repoUrl = article.dataset.repoUrl;
  const log = document.getElementById("log");
  const jump = document.getElementById("log-jump");
  const logState = document.getElementById("log-state");
  const search = document.getElementById("log-search");
  const matches = document.getElementById("log-matches");
  const stopButton = document.getElementById("stop");
  const flash = document.getElementById("flash");
  let status = article.dataset.status;

  // ---- header -----------------------------------------------------------------------------
  function setStatus(next, reason) {
    status = next;
    article.dataset.status = next;
    document.getElementById("status").replaceWith(Object.assign(d.badge(next), { id: "status" }));
    if (reason !== undefined) document.getElementById("status-reason").textContent = reason || "";
    stopButton.hidden = !d.isActive(next);
  }

  async function refreshTask() {
    const r = await d.api("GET", "/api/tasks/" + id);
    if (!r.ok) return;
    const t = r.data;
    setStatus(t.status, t.status_reason);
    article.dataset.started = t.started_at || "";
    article.dataset.finished = t.finished_at || "";
    const set = (slot, ...content) => document.getElementById(slot).replaceChildren(...content);
    if (t.branch) set("branch", el("a", { href: repoUrl + "/tree/" + t.branch }, el("code", {}, t.branch)));
    if (t.pr_url) set("pr", el("a", { href: t.pr_url }, "#" + t.pr_number));
    else if (!d.isActive(t.status)) set("pr", el("span", { class: "muted" }, t.create_pr ? "none opened" : "not requested"));
    if (t.started_at) set("started", d.timeEl(t.started_at));
    if (t.finished_at) set("finished", d.timeEl(t.finished_at));
    tickDuration();
  }

  function tickDuration() {
    const started = Number(article.dataset.started) || 0;
    const finished = Number(article.dataset.finished) || 0;
    if (!started) return;
    const end = finished || (d.isActive(status) ? Date.now() : 0);
    if (end) document.getElementById("duration").textContent = d.fmtDuration(end - started);
  }
  setInterval(() => { if (status === "running") tickDuration(); }, 1000);

  function say(text, isError) {
    flash.textContent = text;
    flash.classList.toggle("error", !!isError);
    flash.hidden = false;
  }

  stopButton.addEventListener("click", async () => {
    if (!window.confirm("Stop this task? The agent is interrupted and its sandbox removed.")) return;
    d.busy(stopButton, "Stopping…");
    const r = await d.api("POST", "/api/tasks/" + id + "/stop");
    d.busy(stopButton);
    if (!r.ok) { say(d.errorOf(r).message, true); return; }
    say("The task was stopped.");
    refreshTask();
  });

  // ---- log ----------------------------------------------------------------------------------
  const lines = []; // {li, span, text}
  let follow = true;
  let pending = [];
  let query = "";
  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 24; }
  log.addEventListener("scroll", () => {
    follow = atBottom();
    jump.hidden = follow;
  });
  // A resized window changes the frame's height: stay at the end when following.
  new ResizeObserver(() => { if (follow) log.scrollTop = log.scrollHeight; }).observe(log);
  jump.addEventListener("click", () => {
    follow = true;
    jump.hidden = true;
    log.scrollTop = log.scrollHeight;
    log.focus();
  });

  function highlight(line) {
    if (!query) { line.span.textContent = line.text; line.li.classList.remove("hidden-by-search"); return false; }
    const lower = line.text.toLowerCase();
    let at = lower.indexOf(query);
    if (at < 0) { line.span.textContent = line.text; line.li.classList.add("hidden-by-search"); return false; }
    const parts = [];
    let from = 0;
    while (at >= 0) {
      parts.push(line.text.slice(from, at), el("mark", {}, line.text.slice(at, at + query.length)));
      from = at + query.length;
      at = lower.indexOf(query, from);
    }
    parts.push(line.text.slice(from));
    line.span.replaceChildren(...parts);
    line.li.classList.remove("hidden-by-search");
    return true;
  }

  function countMatches() {
    if (!query) { matches.textContent = ""; return; }
    const n = lines.filter((l) => !l.li.classList.contains("hidden-by-search")).length;
    matches.textContent = n === 1 ? "1 matching line" : n + " matching lines";
  }

  search.addEventListener("input", () => {
    query = search.value.trim().toLowerCase();
    lines.forEach(highlight);
    countMatches();
    if (follow) log.scrollTop = log.scrollHeight;
  });

  function flush() {
    const batch = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (const ev of batch) {
      const span = el("span", { class: "text" });
      const li = el("li", { class: "ev ev-" + ev.kind, dataset: { seq: ev.seq, kind: ev.kind } },
        el("span", { class: "ts" }, clock.format(new Date(ev.ts))), span);
      const line = { li, span, text: ev.text };
      highlight(line);
      lines.push(line);
      frag.append(li);
    }
    log.append(frag);
    if (query) countMatches();
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function add(ev) {
    if (pending.length === 0) requestAnimationFrame(flush);
    pending.push(ev);
  }

  let source = null;
  function stream() {
    source = new EventSource("/api/tasks/" + id + "/events");
    source.addEventListener("open", () => {
      logState.replaceChildren(d.isActive(status)
        ? el("span", {}, el("span", { class: "spinner", "aria-hidden": "true" }), " Streaming live…")
        : "");
    });
    source.addEventListener("message", (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (_) { return; }
      if (lines.length && Number(ev.seq) <= Number(lines[lines.length - 1].li.dataset.seq)) return;
      add(ev);
    });
    source.addEventListener("end", (msg) => {
      source.close();
      let end = {};
      try { end = JSON.parse(msg.data); } catch (_) { /* keep the current status */ }
      if (end.status) setStatus(end.status, end.status_reason);
      logState.textContent = lines.length ? "" : "This task wrote no log.";
      refreshTask();
      loadDiff(true);
      d.refreshQuota();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) logState.textContent = "The log stream closed; reload the page to see more.";
      else logState.textContent = "Reconnecting to the log…";
    });
  }

  document.getElementById("log-copy").addEventListener("click", async (ev) => {
    const button = ev.currentTarget;
    const text = lines.map((l) => l.text).join("\n");
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied " + lines.length + " lines";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(log);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy log"; }, 2500);
  });

  // Status changes of this task (queued → running) from the user's status stream.
  if (d.isActive(status)) {
    const statuses = new EventSource("/api/tasks/events");
    statuses.addEventListener("status", (msg) => {
      let change;
      try { change = JSON.parse(msg.data); } catch (_) { return; }
      if (change.task_id !== id) return;
      setStatus(change.status, change.status_reason);
      refreshTask();
      if (!d.isActive(change.status)) statuses.close();
    });
    statuses.addEventListener("resync", () => refreshTask());
  }

  // ---- diff ---------------------------------------------------------------------------------
  const diffBox = document.getElementById("diff");
  const diffButton = document.getElementById("diff-load");
  let diffShown = false;

  function patchView(patch) {
    const pre = el("pre", { class: "patch", tabindex: "0", "aria-label": "Unified diff" });
    const frag = document.createDocumentFragment();
    for (const line of patch.split("\n")) {
      let cls = "";
      if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff --git")) cls = "file";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      frag.append(el("span", { class: cls }, line || " "));
    }
    pre.append(frag);
    return pre;
  }

  async function loadDiff(quiet) {
    d.busy(diffButton, "Loading…");
    const r = await d.api("GET", "/api/tasks/" + id + "/diff");
    d.busy(diffButton);
    if (!r.ok) {
      if (!quiet || r.status !== 404) {
        diffBox.replaceChildren(el("p", { class: "muted" }, r.status === 404
          ? (d.isActive(status) ? "The changes appear here when the agent is done." : "This task recorded no changes.")
          : d.errorOf(r).message));
      } else if (!d.isActive(status)) {
        diffBox.replaceChildren(el("p", { class: "muted" }, "This task recorded no changes."));
      }
      return;
    }
    const files = r.data.files || [];
    diffShown = true;
    diffButton.textContent = "Reload changes";
    if (!files.length) { diffBox.replaceChildren(el("p", { class: "muted" }, "The agent changed no files.")); return; }
    const total = files.reduce((a, f) => [a[0] + (f.additions || 0), a[1] + (f.deletions || 0)], [0, 0]);
    const table = el("table", { class: "diff-files" },
      el("caption", { class: "visually-hidden" }, "Changed files"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "File"), el("th", { scope: "col" }, "Change"), el("th", { scope: "col" }, "Lines"))),
      el("tbody", {}, ...files.map((f) => el("tr", {},
        el("td", { class: "path" }, el("code", {}, f.path)),
        el("td", {}, f.status),
        el("td", { class: "num" }, el("span", { class: "adds" }, "+" + (f.additions || 0)), " ", el("span", { class: "dels" }, "−" + (f.deletions || 0)))))));
    diffBox.replaceChildren(
      el("p", {}, files.length + (files.length === 1 ? " file changed, " : " files changed, "),
        el("span", { class: "adds" }, total[0] + (total[0] === 1 ? " addition" : " additions")), ", ",
        el("span", { class: "dels" }, total[1] + (total[1] === 1 ? " deletion" : " deletions"))),
      table, patchView(r.data.patch || ""));
  }
  diffButton.addEventListener("click", () => loadDiff(false));

  stream();
})();
