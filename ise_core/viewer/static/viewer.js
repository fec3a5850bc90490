// The viewer's only script: expand/collapse long texts, and apply list filters on change.
// Served from this app's own origin (the Content-Security-Policy allows nothing else).
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.toggle");
  if (!button) return;
  const box = document.getElementById(button.dataset.target);
  if (!box) return;
  const full = box.querySelector(".full");
  const preview = box.querySelector(".preview");
  const opening = full.hidden;
  full.hidden = !opening;
  if (preview) preview.hidden = opening;
  button.textContent = opening ? button.dataset.less : button.dataset.more;
  button.setAttribute("aria-expanded", String(opening));
});

document.addEventListener("change", (event) => {
  const form = event.target.closest("form#filters");
  if (form && event.target.matches("select, input[type=checkbox]")) form.requestSubmit();
});
