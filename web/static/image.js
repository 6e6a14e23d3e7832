// drydock: keeps the sandbox image banner live while the image is not ready (polls
// /api/sandbox-image; the elapsed time ticks every second between polls).
"use strict";
(function () {
  const banner = document.getElementById("image-banner");
  if (!banner) return;
  const message = banner.querySelector(".image-message");
  const stage = banner.querySelector(".image-stage");
  const hint = banner.querySelector(".image-hint");
  let status = null;
  let fetchedAt = 0;

  function elapsedText(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function render() {
    if (!status) return;
    banner.dataset.state = status.state;
    banner.className = "image-banner image-" + status.state;
    if (status.state === "building") {
      const elapsed = (status.elapsed_s || 0) + Math.floor((Date.now() - fetchedAt) / 1000);
      const step = status.total ? "step " + status.step + " of " + status.total + ", " : "";
      message.textContent = "Preparing the sandbox image — " + step + elapsedText(elapsed);
      stage.textContent = status.stage ? "(" + status.stage + ")" : "";
      hint.textContent = "Tasks you submit now wait in the queue and start when the image is ready.";
    } else {
      message.textContent = status.message;
      stage.textContent = "";
      hint.textContent = status.state === "ready" ? "Queued tasks start now." : "";
    }
  }

  async function poll() {
    try {
      const resp = await fetch("/api/sandbox-image", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (resp.ok) {
        status = await resp.json();
        fetchedAt = Date.now();
        render();
      }
    } catch (_) { /* try again at the next poll */ }
    // On Kubernetes the nodes pull the image: there is nothing to wait for.
    if (!status || (status.state !== "ready" && status.state !== "not_checked")) setTimeout(poll, 2000);
    else clearInterval(ticker);
  }

  const ticker = setInterval(render, 1000);
  poll();
})();
