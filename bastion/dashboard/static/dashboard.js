// Bastion dashboard: progressive enhancement only. Every page works without this file.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// A form that changes something hard to undo asks first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// Filters apply as they change.
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field.matches("[data-autosubmit]") && field.form) field.form.requestSubmit();
  if (field.matches("[data-toggles]")) {
    const target = document.getElementById(field.dataset.toggles);
    if (target) target.hidden = !field.checked;
  }
});

document.querySelectorAll("[data-toggles]").forEach((field) => {
  const target = document.getElementById(field.dataset.toggles);
  if (target) target.hidden = !field.checked;
});

// Times are shown in UTC; the tooltip gives the reader's own time.
document.querySelectorAll("time[datetime]").forEach((node) => {
  const when = new Date(node.getAttribute("datetime"));
  if (!Number.isNaN(when.getTime())) node.title = when.toLocaleString();
});
