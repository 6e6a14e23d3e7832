// drydock: keeps the operator page live by fetching it again every few seconds and swapping in
// its checks and settings (the page is server-rendered; this adds no second renderer).
"use strict";
(function () {
  const live = document.getElementById("admin-live");
  if (!live) return;
  async function refresh() {
    try {
      const resp = await fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.ok) {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const fresh = doc.getElementById("admin-live");
        if (fresh && fresh.innerHTML !== live.innerHTML) live.replaceChildren(...fresh.childNodes);
      }
    } catch (_) { /* try again at the next refresh */ }
  }
  setInterval(refresh, 3000);
})();
