// drydock: helpers every page shares (JSON API calls, errors next to fields, times).
"use strict";
(function () {
  /** Calls the JSON API; resolves to {ok, status, data}. Never throws. */
  async function api(method, url, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const resp = await fetch(url, init);
      let data = null;
      const text = await resp.text();
      if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
      if (resp.status === 401 && data && data.error && data.error.code === "unauthorized") {
        window.location.href = "/?next=" + encodeURIComponent(location.pathname + location.search);
      }
      return { ok: resp.ok, status: resp.status, data };
    } catch (err) {
      return { ok: false, status: 0, data: { error: { code: "network", message: "drydock could not be reached: check your connection and try again." } } };
    }
  }

  function errorOf(result) {
    const e = result && result.data && result.data.error;
    return e || { code: "unknown", message: "Something went wrong (HTTP " + (result ? result.status : "?") + ")." };
  }

  /** Builds an element: el("a", {href: "/"}, "text", child...). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  /** Shows each API error next to its field's control (`err-<field>`), or in the form's error box. */
  function clearErrors(root) {
    root.querySelectorAll(".field-error, .form-error").forEach((p) => { p.hidden = true; p.textContent = ""; });
    root.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
  }
  function showError(root, error, fieldMap) {
    const field = error.field ? (fieldMap && fieldMap[error.field]) || error.field : null;
    const slot = field ? root.querySelector("#err-" + CSS.escape(field)) : null;
    if (slot) {
      slot.textContent = error.message;
      slot.hidden = false;
      const control = root.querySelector("[aria-describedby~='err-" + field + "']");
      if (control) { control.setAttribute("aria-invalid", "true"); control.focus(); }
      return;
    }
    const box = root.querySelector(".form-error");
    if (box) { box.textContent = error.message; box.hidden = false; box.focus && box.focus(); }
    else window.alert(error.message);
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  }
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  function fmtTime(ms) { return timeFormat.format(new Date(ms)); }
  /** Today: the time only; this year: no year; else the full date. */
  function fmtShort(ms) {
    const t = new Date(ms);
    const now = new Date();
    if (t.toDateString() === now.toDateString()) return clockFormat.format(t);
    if (t.getFullYear() === now.getFullYear()) return dayFormat.format(t);
    return timeFormat.format(t);
  }
  function timeEl(ms, short) {
    return el("time", { datetime: new Date(ms).toISOString(), title: fmtTime(ms), "data-format": short ? "short" : null }, short ? fmtShort(ms) : fmtTime(ms));
  }
  /** Shows server-rendered UTC times in the reader's time zone. */
  function localizeTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.title = fmtTime(d.getTime());
        t.textContent = t.dataset.format === "short" ? fmtShort(d.getTime()) : fmtTime(d.getTime());
      }
    });
  }

  function statusLabel(s) { return String(s).replace(/_/g, " "); }
  function badge(status) { return el("span", { class: "badge badge-" + status }, statusLabel(status)); }
  function isActive(s) { return s === "queued" || s === "running"; }

  /** Refreshes "N of M tasks left today" in the header. */
  async function refreshQuota() {
    const q = document.getElementById("quota");
    if (!q) return;
    const r = await api("GET", "/api/me");
    if (r.ok && r.data && r.data.quota) q.textContent = r.data.quota.remaining + " of " + r.data.quota.limit + " tasks left today";
  }

  /** Sets a button busy ("Testing…") with a spinner, and back. */
  function busy(button, label) {
    if (label) {
      button.dataset.label = button.textContent;
      button.disabled = true;
      button.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), " " + label);
    } else {
      button.disabled = false;
      if (button.dataset.label) button.textContent = button.dataset.label;
    }
  }

  window.drydock = { api, errorOf, el, clearErrors, showError, fmtDuration, fmtTime, timeEl, localizeTimes, statusLabel, badge, isActive, refreshQuota, busy };
  document.addEventListener("DOMContentLoaded", () => localizeTimes(document));
  // Editing a control that was marked wrong clears its message.
  document.addEventListener("input", (ev) => {
    const control = ev.target;
    if (!(control instanceof Element) || control.getAttribute("aria-invalid") !== "true") return;
    control.removeAttribute("aria-invalid");
    for (const id of (control.getAttribute("aria-describedby") || "").split(/\s+/)) {
      const slot = id.startsWith("err-") ? document.getElementById(id) : null;
      if (slot) { slot.hidden = true; slot.textContent = ""; }
    }
  });
})();
