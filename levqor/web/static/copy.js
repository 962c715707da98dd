// "Copy" buttons: <button data-copy="#id"> copies the value (or text) of the element it
// names. A file, not inline script, for the CSP; without JavaScript the button stays
// hidden and the field can be selected and copied by hand.
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      const status = document.querySelector(button.dataset.status);
      try {
        await navigator.clipboard.writeText(source.value ?? source.textContent);
        if (status) status.textContent = "Copied.";
      } catch {
        source.select?.();
        if (status) status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    });
  }
});
