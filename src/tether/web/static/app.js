// Tether dashboard: small enhancements only; every page works without script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A typed confirmation enables its button only when the text matches.
  for (const input of document.querySelectorAll("input[data-confirm]")) {
    const button = input.form && input.form.querySelector("button[type=submit]");
    if (!button) continue;
    const check = () => { button.disabled = input.value.trim() !== input.dataset.confirm; };
    input.addEventListener("input", check);
    check();
  }
});
