// Comms pages, enhanced: the upload shows its progress (the bytes sent, then how much of them the
// comms service has read), and the contact network is drawn with cytoscape. Without script the
// upload form posts as usual and the downloads hold the network.
"use strict";

const POLL_MS = 500;

function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// "120 of 290 MB": both amounts in the unit of the whole.
function amountOf(part, whole) {
  if (whole < 1e6) return `${Math.round(part / 1e3)} of ${Math.max(1, Math.round(whole / 1e3))} kB`;
  const digits = whole >= 1e8 ? 0 : 1;
  return `${(part / 1e6).toFixed(digits)} of ${(whole / 1e6).toFixed(digits)} MB`;
}

// Ask the console how far the comms service has got with the upload until stop() is called.
function watchImport(address, file, bar, say) {
  let stopped = false;
  let timer = 0;
  const show = (p) => {
    if (p.phase === "reading" && p.total > 0) {
      const percent = Math.floor((100 * p.sent) / p.total);
      bar.value = percent;
      say(`The comms service has read ${percent}% of ${file.name} (${amountOf(p.sent, p.total)})...`);
    } else if (p.phase === "indexing") {
      bar.removeAttribute("value");
      say("All rows read; the comms service is checking and indexing them...");
    } else if (p.phase === "done") {
      bar.value = 100;
      say(`The comms service has imported ${file.name}. Opening the dataset...`);
    } else if (p.phase === "failed") {
      say(`The comms service did not import ${file.name}. Finding out why...`);
    }
  };
  const poll = async () => {
    try {
      const answer = await fetch(address, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.status === 401) stopped = true; // the upload's own answer says to sign in again
      // Not found until the console has the whole form and starts the import: keep asking.
      const found = answer.ok ? await answer.json() : null;
      if (found && !stopped) show(found);
    } catch (e) {
      // A poll that failed says nothing about the upload; the next may answer.
    }
    if (!stopped) timer = window.setTimeout(poll, POLL_MS);
  };
  poll();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

function uploadWithProgress(form) {
  const box = form.querySelector(".progress");
  const bar = form.querySelector("progress");
  const status = form.querySelector("[role=status]");
  const button = form.querySelector("button[type=submit]");
  if (!box || !bar || !status || !window.XMLHttpRequest || !window.FormData) return;
  form.addEventListener("submit", (event) => {
    const input = form.querySelector("input[type=file]");
    const file = input && input.files && input.files[0];
    if (!file) return; // the browser's own check says what is missing
    event.preventDefault();
    const uploadId = randomId();
    const idField = form.querySelector("input[name=upload_id]");
    if (idField) idField.value = uploadId;
    let stopWatching = () => {};
    const say = (text) => {
      if (status.textContent !== text) status.textContent = text; // no repeat for screen readers
    };
    const xhr = new XMLHttpRequest();
    const size = file.size >= 1e6 ? `${(file.size / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(file.size / 1e3))} kB`;
    box.hidden = false;
    bar.value = 0;
    button.disabled = true;
    status.textContent = `Uploading ${file.name} (${size}): 0%`;
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.floor((100 * e.loaded) / e.total);
      bar.value = percent;
      status.textContent = `Uploading ${file.name} (${size}): ${percent}%`;
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = 100;
      bar.removeAttribute("value"); // indeterminate until the console says how far the service has read
      status.textContent = `Uploaded ${file.name} (${size}). The comms service is reading, checking and indexing the rows...`;
      if (idField && form.dataset.progress) stopWatching = watchImport(form.dataset.progress + uploadId, file, bar, say);
    });
    xhr.addEventListener("loadend", () => stopWatching());
    xhr.addEventListener("load", () => {
      const done = new URL(xhr.responseURL || form.action, window.location.href);
      if (xhr.status < 400 && done.pathname !== new URL(form.action, window.location.href).pathname) {
        window.location.assign(done.href); // the dataset's page: rows stored and rejected
        return;
      }
      // A refusal: show the page the server answered (it says what to correct).
      const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      const main = page.querySelector("main");
      if (main) {
        document.querySelector("main").replaceWith(main);
        document.title = page.title;
        init();
        const alert = document.querySelector("main [role=alert]");
        if (alert) alert.scrollIntoView();
      } else {
        box.hidden = false;
        status.textContent = "The upload did not complete. Reload the page and try again.";
        button.disabled = false;
      }
    });
    xhr.addEventListener("error", () => {
      status.textContent = "The upload was interrupted: nothing was stored. Check your connection and upload the file again.";
      button.disabled = false;
    });
    xhr.open("POST", form.action);
    xhr.send(new FormData(form));
  });
}

async function drawNetwork(box) {
  const status = document.getElementById("network-status");
  if (!window.cytoscape) return;
  status.textContent = "Loading the network...";
  let data;
  try {
    const answer = await fetch(box.dataset.source, { credentials: "same-origin", headers: { Accept: "application/json" } });
    data = await answer.json();
    if (!answer.ok) {
      status.textContent = data.error || "The network could not be loaded. Reload the page to try again.";
      return;
    }
  } catch (e) {
    status.textContent = "The network could not be loaded. Reload the page to try again.";
    return;
  }
  if (!data.nodes.length) {
    status.textContent = "No contact between the targets and other numbers in this job's call data.";
    return;
  }
  box.classList.add("drawn");
  const legend = document.querySelector(".legend");
  if (legend) legend.hidden = false;
  const cy = window.cytoscape({
    container: box,
    elements: { nodes: data.nodes, edges: data.edges },
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 10, width: "data(size)", height: "data(size)", "background-color": "#1d70b8", color: "#0b0c0c", "text-valign": "bottom", "text-margin-y": 3 } },
      { selector: "node[?target]", style: { "background-color": "#0b0c0c", shape: "diamond" } },
      { selector: "node[?watchlist]", style: { "background-color": "#d4351c", "border-width": 2, "border-color": "#0b0c0c" } },
      { selector: "edge", style: { width: "data(width)", "line-color": "#8d98a0", "curve-style": "bezier" } },
      { selector: ":selected", style: { "overlay-opacity": 0.2, "line-color": "#f47738", "background-color": "#f47738" } },
    ],
    layout: { name: "cose", animate: false, randomize: false, nodeRepulsion: () => 8000, idealEdgeLength: () => 80 },
  });
  const say = (text) => { status.textContent = text; };
  cy.on("tap", "node", (e) => {
    const n = e.target;
    say(`${n.id()}${n.data("target") ? " (target)" : ""}${n.data("watchlist") ? " (on a watchlist)" : ""}: ${n.data("events")} records, ${n.degree()} numbers in contact.`);
  });
  cy.on("tap", "edge", (e) => {
    const d = e.target.data();
    say(`${d.source} and ${d.target}: ${d.contacts} contacts (${d.calls} calls, ${d.texts} texts).`);
  });
  box.dataset.drawn = String(data.nodes.length);
  say(`${data.nodes.length} numbers and ${data.edges.length} links. Drag to move, scroll to zoom, select a number or link for its figures.`);
}

function init() {
  const form = document.getElementById("upload");
  if (form) uploadWithProgress(form);
  const box = document.getElementById("network");
  if (box) drawNetwork(box);
}

document.addEventListener("DOMContentLoaded", init);
