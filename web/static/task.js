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
    else set("finished", el("span", { class: "muted" }, "—"));
    if (t.sandbox_expires_at) {
      const end = el("button", { type: "button", class: "secondary small", id: "sandbox-stop" }, "End now");
      set("sandbox", "kept until ", d.timeEl(t.sandbox_expires_at), " ", end);
      end.addEventListener("click", endSandbox);
    } else {
      set("sandbox", el("span", { class: "muted" }, t.keep_alive ? "kept between turns while idle" : "removed after each turn"));
    }
    if (t.preview_url) set("preview", el("a", { href: t.preview_url, target: "_blank", rel: "noopener" }, "Open the dev server"));
    else set("preview", el("span", { class: "muted" }, "none running"));
    document.getElementById("turns").textContent = t.turns === 1 ? "1 turn" : t.turns + " turns";
    tickDuration();
    loadConversation();
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

  async function endSandbox(ev) {
    if (!window.confirm("End this task's sandbox now? The next follow-up starts a fresh one from the branch.")) return;
    const button = ev.currentTarget;
    d.busy(button, "Ending…");
    const r = await d.api("POST", "/api/tasks/" + id + "/sandbox/stop");
    d.busy(button);
    if (!r.ok) { say(d.errorOf(r).message, true); return; }
    say("The sandbox was removed.");
    refreshTask();
  }
  const sandboxStop = document.getElementById("sandbox-stop");
  if (sandboxStop) sandboxStop.addEventListener("click", endSandbox);

  // ---- conversation -------------------------------------------------------------------------
  const conversation = document.getElementById("conversation");
  async function loadConversation() {
    const r = await d.api("GET", "/api/tasks/" + id + "/messages");
    if (!r.ok) return;
    conversation.replaceChildren(...r.data.map((m) => el("li", { class: "message message-" + m.role },
      el("p", { class: "message-meta" }, el("strong", {}, m.role === "user" ? "You" : "Agent"), " ",
        el("span", { class: "muted" }, m.turn ? "turn " + m.turn : m.turn === 0 ? "not run: the task was stopped" : "waiting")),
      el("pre", {}, m.content))));
  }

  const followForm = document.getElementById("follow-up-form");
  const followText = document.getElementById("follow-up");
  const followSend = document.getElementById("follow-up-send");
  followForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    d.clearErrors(followForm);
    const wasActive = d.isActive(status);
    d.busy(followSend, "Sending…");
    const r = await d.api("POST", "/api/tasks/" + id + "/messages", { prompt: followText.value });
    d.busy(followSend);
    if (!r.ok) { d.showError(followForm, d.errorOf(r)); return; }
    followText.value = "";
    say(wasActive ? "Sent: it runs after the current turn." : "Sent: the next turn starts shortly.");
    d.refreshQuota();
    await loadConversation();
    // The log stream and the status stream ended with the last turn: follow the next one.
    if (!d.isActive(status)) setStatus("queued", "");
    if (!source || source.readyState === EventSource.CLOSED) stream();
    watchStatuses();
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

  // The environment's setup is a stage of its own: its lines follow an "Environment setup"
  // line, which toggles them; a setup that made its snapshot folds away.
  let stage = null;
  function toggleStage(st, open) {
    st.open = open;
    st.head.setAttribute("aria-expanded", String(open));
    st.lines.forEach((li) => li.classList.toggle("stage-folded", !open));
  }

  function flush() {
    const batch = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (const ev of batch) {
      const span = el("span", { class: "text" });
      const li = el("li", { class: "ev ev-" + ev.kind, dataset: { seq: ev.seq, kind: ev.kind } },
        el("span", { class: "ts" }, clock.format(new Date(ev.ts))), span);
      const line = { li, span, text: shown(ev.text) };
      highlight(line);
      lines.push(line);
      frag.append(li);
      if (ev.kind === "info" && ev.text === "Environment setup") {
        const st = { head: li, lines: [], open: true };
        li.classList.add("stage-head");
        li.tabIndex = 0;
        li.setAttribute("role", "button");
        li.setAttribute("aria-expanded", "true");
        li.title = "Show or hide the setup's output";
        li.addEventListener("click", () => toggleStage(st, !st.open));
        li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggleStage(st, !st.open); } });
        stage = st;
      } else if (stage && ev.kind === "info" && ev.text.startsWith("Environment snapshot ")) {
        toggleStage(stage, false);
        stage = null;
      } else if (stage && (ev.kind === "error" || ev.kind === "success")) {
        stage = null;
      } else if (stage) {
        li.classList.add("stage-line");
        stage.lines.push(li);
      }
    }
    log.append(frag);
    if (query) countMatches();
    if (follow) log.scrollTop = log.scrollHeight;
  }

  // drydock stores lines as a terminal shows them; lines stored before it did may still hold
  // escape sequences: show their text, not the codes.
  const escapes = /\u001b\[[0-?]*[ -\/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|\u001b[@-_]?/g;
  function shown(text) {
    const plain = text.indexOf("\u001b") < 0 ? text : text.replace(escapes, "");
    const cr = plain.lastIndexOf("\r");
    return cr < 0 ? plain : plain.slice(cr + 1);
  }

  function add(ev) {
    if (pending.length === 0) requestAnimationFrame(flush);
    pending.push(ev);
  }

  let source = null;
  function stream() {
    const last = lines.length ? lines[lines.length - 1].li.dataset.seq : 0;
    source = new EventSource("/api/tasks/" + id + "/events?after=" + last);
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
      // Lines replayed in the same breath as the end are still waiting for a frame: show them
      // first, then say whether there were any.
      if (pending.length) flush();
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

  // Status changes of this task (queued → running, a queued follow-up, the sandbox or preview)
  // from the user's status stream, while there is something to follow.
  let statuses = null;
  function watchStatuses() {
    if (statuses && statuses.readyState !== EventSource.CLOSED) return;
    statuses = new EventSource("/api/tasks/events");
    statuses.addEventListener("status", (msg) => {
      let change;
      try { change = JSON.parse(msg.data); } catch (_) { return; }
      if (change.task_id !== id) return;
      setStatus(change.status, change.status_reason);
      refreshTask();
      if (d.isActive(change.status) && (!source || source.readyState === EventSource.CLOSED)) stream();
    });
    statuses.addEventListener("resync", () => refreshTask());
  }
  if (d.isActive(status) || article.dataset.keepAlive === "true") watchStatuses();

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
