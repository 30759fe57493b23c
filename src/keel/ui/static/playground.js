// The playground: edit a prompt, render it through the API, stream the model's answer through the
// gateway, save it as a new version and promote it. Output is appended as text nodes only.
import { api, authHeaders, clearMessages, errorMessage, promptPath, showMessage } from "./keel.js";
import { sseData } from "./sse.js";

const form = document.getElementById("playground");
const fields = form.elements;
const output = document.getElementById("output");
const runStatus = document.getElementById("run-status");
const saveResult = document.getElementById("save-result");
const promoteResult = document.getElementById("promote-result");
const rows = document.getElementById("message-rows");
const runButton = document.getElementById("run");
const stopButton = document.getElementById("stop");
const promoteButton = document.getElementById("promote");
let version = form.dataset.version ? Number(form.dataset.version) : null;
let controller = null;

function showKind() {
  document.getElementById("chat-editor").hidden = fields.kind.value !== "chat";
  document.getElementById("text-editor").hidden = fields.kind.value !== "text";
}

function jsonObject(text, what) {
  if (!text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${what} must be a JSON object`);
  }
  return value;
}

function variableValues() {
  return jsonObject(fields.variables.value, "Variables");
}

function content(values) {
  const out = {};
  if (fields.kind.value === "chat") {
    out.messages = [...rows.querySelectorAll(".message-row")].map((row) => ({
      role: row.querySelector("select").value,
      content: row.querySelector("textarea").value,
    }));
  } else {
    out.template = fields.template.value;
  }
  // a declared JSON schema is kept; otherwise the declared variables are the ones given values
  out.variables = form.dataset.schema ? JSON.parse(form.dataset.schema) : Object.keys(values);
  out.config = modelConfig();
  return out;
}

function modelConfig() {
  const config = jsonObject(form.dataset.extraConfig || "", "Configuration");
  config.model = fields.model.value;
  if (fields.temperature.value !== "") config.temperature = Number(fields.temperature.value);
  if (fields.max_tokens.value !== "") config.max_tokens = Number(fields.max_tokens.value);
  return config;
}

async function streamChat(body, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  for await (const data of sseData(response)) {
    if (data === "[DONE]") break;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message || "the stream failed");
    const delta = event.choices && event.choices[0] && event.choices[0].delta;
    if (delta && typeof delta.content === "string") output.append(delta.content);
  }
}

async function run(event) {
  event.preventDefault();
  clearMessages();
  output.replaceChildren();
  runStatus.textContent = "rendering…";
  controller = new AbortController();
  runButton.disabled = true;
  stopButton.hidden = false;
  try {
    const values = variableValues();
    const rendered = await api("POST", "/api/v1/prompts/render", {
      content: content(values),
      variables: values,
    });
    runStatus.textContent = "streaming…";
    const body = { ...rendered.config, model: fields.model.value, messages: rendered.messages };
    body.stream = true;
    await streamChat(body, controller.signal);
    runStatus.textContent = "done";
  } catch (err) {
    runStatus.textContent = err.name === "AbortError" ? "stopped" : "failed";
    if (err.name !== "AbortError") showMessage(err.message);
  } finally {
    runButton.disabled = false;
    stopButton.hidden = true;
    controller = null;
  }
}

async function save() {
  clearMessages();
  saveResult.textContent = "";
  try {
    const name = fields.name.value.trim();
    if (!name) throw new Error("give the prompt a name");
    const values = variableValues();
    const body = { name, ...content(values) };
    if (fields.description.value.trim()) body.description = fields.description.value.trim();
    if (fields.message.value.trim()) body.message = fields.message.value.trim();
    const result = await api("POST", "/api/v1/prompts", body);
    version = result.version.version;
    saveResult.textContent = result.created
      ? `Saved as version ${version}.`
      : `Nothing new: identical to version ${version}.`;
    saveResult.dataset.version = String(version);
    fields.name.readOnly = true;
    promoteButton.disabled = false;
  } catch (err) {
    showMessage(err.message);
  }
}

async function promote() {
  clearMessages();
  promoteResult.replaceChildren();
  const label = fields.label.value.trim();
  if (!label || version === null) {
    showMessage("save a version and give a label first");
    return;
  }
  try {
    const name = fields.name.value.trim();
    await api("PUT", promptPath(name, "labels", label), { version });
    const done = document.createElement("p");
    done.className = "info";
    done.textContent = `${label} now points at version ${version}. `;
    const link = document.createElement("a");
    link.href = `/prompts/${encodeURIComponent(name)}`;
    link.textContent = "Open the prompt";
    done.append(link);
    promoteResult.replaceChildren(done);
  } catch (err) {
    showMessage(err.message);
  }
}

async function loadModels() {
  const select = fields.model;
  const current = select.dataset.current;
  try {
    const listed = await api("GET", "/v1/models");
    const ids = listed.data.map((m) => m.id);
    if (current && !ids.includes(current)) ids.unshift(current);
    select.replaceChildren(
      ...ids.map((id) => {
        const option = document.createElement("option");
        option.value = id;
        option.textContent = id;
        option.selected = id === current;
        return option;
      }),
    );
  } catch (err) {
    showMessage(`could not list the models: ${err.message}`);
  }
}

function addMessage() {
  const row = document.getElementById("message-row-template").content.firstElementChild;
  rows.append(row.cloneNode(true));
}

fields.kind.addEventListener("change", showKind);
document.getElementById("add-message").addEventListener("click", addMessage);
rows.addEventListener("click", (event) => {
  const button = event.target.closest(".remove-message");
  if (button) button.closest(".message-row").remove();
});
form.addEventListener("submit", run);
stopButton.addEventListener("click", () => controller && controller.abort());
document.getElementById("save").addEventListener("click", save);
promoteButton.addEventListener("click", promote);
loadModels();
