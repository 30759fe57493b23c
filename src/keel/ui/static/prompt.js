// The prompt page: promote a version to a label, roll a label back; then reload the page.
import { api, clearMessages, promptPath, showMessage } from "./keel.js";

const name = document.getElementById("prompt-data").dataset.prompt;

async function act(call) {
  clearMessages();
  try {
    await call();
    window.location.reload();
  } catch (err) {
    showMessage(err.message);
  }
}

const promote = document.getElementById("promote");
promote.addEventListener("submit", (event) => {
  event.preventDefault();
  const label = promote.elements.label.value.trim();
  const version = Number(promote.elements.version.value);
  if (!label) {
    showMessage("give the label to promote to");
    return;
  }
  act(() => api("PUT", promptPath(name, "labels", label), { version }));
});

for (const button of document.querySelectorAll("button.rollback")) {
  button.addEventListener("click", () => {
    const label = button.dataset.label;
    act(() => api("POST", promptPath(name, "labels", label, "rollback")));
  });
}
