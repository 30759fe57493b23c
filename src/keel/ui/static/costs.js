// The costs page: "Download CSV" fetches the API's export with the page's API token (the API
// does not accept the UI's cookie), then saves it. In open mode the plain link works as well.
import { authHeaders, errorMessage, showMessage } from "./keel.js";

async function download(link) {
  const response = await fetch(link.href, { headers: authHeaders(), credentials: "same-origin" });
  if (!response.ok) {
    showMessage(await errorMessage(response));
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = link.dataset.filename || "keel-costs.csv";
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

for (const link of document.querySelectorAll("a.download-csv")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    download(link).catch((err) => showMessage(err.message));
  });
}
