// dth-ray console: swaps the page's live part in again every few seconds (no full reload), says how old the
// numbers are, and copies a command to the clipboard. No third-party code; nothing leaves this origin.
"use strict";
(function () {
  const live = document.getElementById("live");
  const freshness = document.getElementById("freshness");
  let loadedAt = Date.now();
  let failing = false;

  function showFreshness() {
    if (!freshness) return;
    const age = Math.round((Date.now() - loadedAt) / 1000);
    freshness.textContent = (failing ? "cannot refresh; numbers from " : "refreshed ") + age + " s ago";
    freshness.classList.toggle("failing", failing);
  }

  function selecting() {
    const selection = window.getSelection();
    return selection && selection.toString().length > 0 && live.contains(selection.anchorNode);
  }

  async function refresh() {
    if (!live || !live.dataset.src || document.hidden || selecting()) return;
    try {
      const response = await fetch(live.dataset.src, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) throw new Error(String(response.status));
      // The server renders and escapes this part, as it did the first time the page loaded.
      live.innerHTML = await response.text();
      loadedAt = Date.now();
      failing = false;
    } catch (err) {
      failing = true;
    }
    showFreshness();
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const text = source.textContent;
    const done = function () { button.textContent = "copied"; setTimeout(function () { button.textContent = "copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
    }
  });

  function selectText(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  const interval = live ? parseInt(live.dataset.intervalMs || "3000", 10) : 0;
  if (interval > 0) {
    setInterval(refresh, interval);
    setInterval(showFreshness, 1000);
  }
})();
