// The dashboard's script: everything it shows comes from the /v1 API of
// the service that served it. One event stream (GET /v1/upload/events)
// feeds the live uploads and the finished tasks; the lists are read with
// GET, the forms POST, and cancel and delete ask first. Text from the
// server only ever goes into the page as text (textContent, value,
// attributes), never as HTML. When the API answers 401 the page asks for
// the key once and keeps it in sessionStorage, for this tab only.
"use strict";

(() => {
  const KEY_STORAGE = "vectorize.apiKey";
  const MAX_ATTEMPTS = 4;
  const PAGE = 50;
  const STATUSES = { RUNNING: "Running", PENDING: "Queued", DONE: "Done", FAILED: "Failed", CANCELLED: "Cancelled" };
  const SOURCES = { HUGGINGFACE: "Hugging Face", GITHUB: "GitHub", LOCAL: "ZIP" };
  const MIRROR_ROOTS = { HUGGINGFACE: "huggingface", GITHUB: "github", LOCAL: "local" };
  // The stream sends a comment every 15 s: silence past this means it is gone.
  const STREAM_SILENCE_MS = 45000;
  // The window the rate of a running upload is measured over.
  const RATE_WINDOW_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const isFinished = (status) => status === "DONE" || status === "FAILED" || status === "CANCELLED";

  // ---------------------------------------------------------------- text

  function formatBytes(bytes) {
    if (bytes == null || !Number.isFinite(bytes)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(2)} ${units[unit]}`;
  }

  function formatDuration(ms) {
    if (ms == null || !Number.isFinite(ms) || ms < 0) return "—";
    const total = Math.round(ms / 1000);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (h > 0) return `${h}h ${pad(m)}m`;
    if (m > 0) return `${m}m ${pad(s)}s`;
    return `${s}s`;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function setTime(element, iso) {
    if (!iso) {
      element.textContent = "—";
      element.removeAttribute("datetime");
      return;
    }
    element.dateTime = iso;
    element.title = iso;
    element.textContent = timeFormat.format(new Date(iso));
  }

  function announce(text) {
    $("announcer").textContent = text;
  }

  /** A value as the shell reads it: bare when it is plain, else single-quoted. */
  function shellWord(value) {
    return /^[A-Za-z0-9._\/@%+=:,-]+$/.test(value) ? value : `'${value.replace(/'/g, "'\\''")}'`;
  }

  // ---------------------------------------------------------------- the API key

  let keyPrompt = null;
  let keyDeclined = false;

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch {
      return null;
    }
  }

  function authHeaders() {
    const key = storedKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function showKeyButton() {
    const button = $("key-button");
    const key = storedKey();
    button.hidden = !key && !keyDeclined;
    button.textContent = key ? "Forget API key" : "Enter API key";
    document.querySelectorAll(".pull-key").forEach((hint) => { hint.hidden = !key; });
  }

  /**
   * Asks for the key once, however many requests were refused at the same
   * time; resolves when a key was entered, rejects when the person declined.
   */
  function askForKey(refusedKey) {
    if (keyPrompt) return keyPrompt;
    if (keyDeclined) return Promise.reject(new Error("declined"));
    keyPrompt = new Promise((resolve, reject) => {
      const dialog = $("key-dialog");
      const input = $("key-input");
      const reason = $("key-reason");
      if (refusedKey) {
        reason.textContent = "The service refused that key. Check it and try again.";
        reason.dataset.kind = "error";
      } else {
        reason.textContent = "This service asks for its API key. It is kept for this browser tab only.";
        delete reason.dataset.kind;
      }
      input.value = "";
      const finish = (entered) => {
        dialog.removeEventListener("close", onClose);
        $("key-cancel").removeEventListener("click", onCancel);
        keyPrompt = null;
        if (entered) {
          try {
            sessionStorage.setItem(KEY_STORAGE, entered);
          } catch {
            // Storage is off: the key cannot be kept, and will be asked for again.
          }
          keyDeclined = false;
          showKeyButton();
          resolve();
        } else {
          keyDeclined = true;
          showKeyButton();
          setLinkState("locked", "Needs the API key");
          reject(new Error("declined"));
        }
      };
      const onClose = () => finish(dialog.returnValue === "ok" ? input.value.trim() : "");
      const onCancel = () => dialog.close("cancel");
      dialog.addEventListener("close", onClose);
      $("key-cancel").addEventListener("click", onCancel);
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  $("key-button").addEventListener("click", () => {
    if (storedKey()) {
      try {
        sessionStorage.removeItem(KEY_STORAGE);
      } catch {
        // Nothing was stored.
      }
      keyDeclined = false;
      showKeyButton();
      announce("The API key was forgotten.");
      restartStream();
      return;
    }
    keyDeclined = false;
    askForKey(false).then(reloadEverything, () => {});
  });

  // ---------------------------------------------------------------- requests

  /** An answer of the service that is not 2xx, with its code and message. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON: a proxy's page, say.
    }
    if (body && typeof body.message === "string") {
      return new ApiError(response.status, body.code || "", body.message);
    }
    return new ApiError(response.status, "", `The service answered ${response.status} ${response.statusText}.`);
  }

  /** Sends a request to the API, asking for the key when it is refused. */
  async function api(method, path, body) {
    for (;;) {
      const headers = { Accept: "application/json", ...authHeaders() };
      const init = { method, headers };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(path, init);
      } catch {
        throw new ApiError(0, "", "The service cannot be reached.");
      }
      if (response.status === 401) {
        const sent = storedKey();
        try {
          await askForKey(Boolean(sent));
        } catch {
          throw await errorFrom(response);
        }
        continue;
      }
      if (!response.ok) throw await errorFrom(response);
      if (response.status === 204) return null;
      return response.json();
    }
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== "" && value != null) search.set(name, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  // ---------------------------------------------------------------- dialogs

  /** Asks before something that cannot be undone; resolves to true or false. */
  function confirmAction(title, text, yes) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = yes;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
      dialog.showModal();
      $("confirm-no").focus();
    });
  }

  // ---------------------------------------------------------------- tasks

  /** The newest state known of every task, to drop stale ones. */
  const known = new Map();
  /** Live rows by task id: the element and the samples its rate comes from. */
  const liveRows = new Map();
  const historyRows = new Map();
  let historyOffset = 0;
  let historyGeneration = 0;

  const filters = () => ({ status: $("filter-status").value, source: $("filter-source").value });

  function matches(task) {
    const { status, source } = filters();
    return (!status || task.task_status === status) && (!source || task.source === source);
  }

  /** Whether `task` is newer than what is known of it (a finished task never runs again). */
  function isNews(task) {
    const last = known.get(task.id);
    if (!last) return true;
    if (isFinished(last.task_status) && !isFinished(task.task_status)) return false;
    return Date.parse(task.updated_at) >= Date.parse(last.updated_at) || isFinished(task.task_status);
  }

  function onTask(task) {
    if (!isNews(task)) return;
    const before = known.get(task.id);
    known.set(task.id, task);
    if (isFinished(task.task_status)) {
      removeLive(task.id);
      showFinished(task, true);
      if (before && !isFinished(before.task_status)) {
        announce(`${task.model_tag} is ${STATUSES[task.task_status].toLowerCase()}.`);
      }
      if (task.task_status === "DONE") refreshStoreSoon();
    } else {
      showLive(task);
    }
  }

  function fillHead(row, task) {
    row.querySelector(".tag").textContent = task.model_tag;
    const source = row.querySelector(".source");
    source.textContent = SOURCES[task.source] || task.source;
    const status = row.querySelector(".status");
    status.textContent = STATUSES[task.task_status] || task.task_status;
    status.dataset.status = task.task_status;
    row.dataset.status = task.task_status;
    row.dataset.source = task.source;
  }

  function showLive(task) {
    let entry = liveRows.get(task.id);
    if (!entry) {
      const row = $("live-row").content.firstElementChild.cloneNode(true);
      row.dataset.taskId = task.id;
      row.querySelector(".cancel").addEventListener("click", () => cancelTask(task.id));
      entry = { row, samples: [], attempt: null, task };
      liveRows.set(task.id, entry);
      placeLive(entry, true);
    }
    const statusChanged = entry.task.task_status !== task.task_status;
    entry.task = task;
    fillHead(entry.row, task);
    const cancel = entry.row.querySelector(".cancel");
    cancel.setAttribute("aria-label", `Cancel upload ${task.model_tag}`);
    entry.row.querySelector(".node").textContent = task.node ? `on ${task.node}` : "";
    if (entry.attempt !== task.attempts || task.task_status !== "RUNNING") {
      entry.samples = [];
      entry.attempt = task.attempts;
    }
    if (task.task_status === "RUNNING") {
      const bytes = task.progress.bytes_done;
      const last = entry.samples[entry.samples.length - 1];
      if (last && bytes < last.bytes) entry.samples = [];
      entry.samples.push({ at: performance.now(), bytes });
    }
    drawProgress(entry);
    if (statusChanged) placeLive(entry, false);
    entry.row.hidden = !matches(task);
    updateLiveCount();
  }

  /** Running tasks first, oldest start first; then queued ones, first come first. */
  function liveOrder(a, b) {
    const rank = (t) => (t.task_status === "RUNNING" ? 0 : 1);
    if (rank(a) !== rank(b)) return rank(a) - rank(b);
    const key = (t) => Date.parse(t.task_status === "RUNNING" ? t.started_at || t.created_at : t.created_at);
    return key(a) - key(b);
  }

  function placeLive(entry, isNew) {
    const list = $("live-list");
    const next = [...liveRows.values()]
      .filter((other) => other !== entry && other.row.parentNode === list && liveOrder(entry.task, other.task) < 0)
      .sort((a, b) => liveOrder(a.task, b.task))[0];
    const focused = entry.row.contains(document.activeElement) ? document.activeElement : null;
    if (next) list.insertBefore(entry.row, next.row);
    else if (isNew || entry.row.nextSibling) list.appendChild(entry.row);
    if (focused) focused.focus();
  }

  function removeLive(id) {
    const entry = liveRows.get(id);
    if (!entry) return;
    const hadFocus = entry.row.contains(document.activeElement);
    entry.row.remove();
    liveRows.delete(id);
    updateLiveCount();
    if (hadFocus) $("live-title").focus();
  }

  function rateOf(entry, now) {
    const samples = entry.samples.filter((s) => now - s.at <= RATE_WINDOW_MS);
    if (entry.samples.length) {
      // The newest sample stands for "now": a stalled upload's rate falls to zero.
      const newest = entry.samples[entry.samples.length - 1];
      samples.push({ at: now, bytes: newest.bytes });
    }
    entry.samples = entry.samples.filter((s) => now - s.at <= RATE_WINDOW_MS || s === entry.samples[entry.samples.length - 1]);
    if (samples.length < 2) return null;
    const first = samples[0];
    const last = samples[samples.length - 1];
    const span = last.at - first.at;
    if (span < 750) return null;
    return ((last.bytes - first.bytes) * 1000) / span;
  }

  function drawProgress(entry) {
    const { row, task } = entry;
    const { bytes_done: done, bytes_total: total, files_done: filesDone, files_total: filesTotal } = task.progress;
    const running = task.task_status === "RUNNING";
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const bar = row.querySelector(".bar");
    bar.querySelector(".fill").style.transform = `scaleX(${fraction})`;
    const percent = Math.floor(fraction * 100);
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-label", `Progress of ${task.model_tag}`);
    bar.setAttribute("aria-valuetext", total > 0 ? `${percent}%, ${formatBytes(done)} of ${formatBytes(total)}` : "waiting");
    bar.toggleAttribute("data-idle", !running);
    row.querySelector(".bytes").textContent = total > 0
      ? `${formatBytes(done)} / ${formatBytes(total)} (${percent}%)`
      : running ? "listing files…" : "queued";
    const rate = running ? rateOf(entry, performance.now()) : null;
    row.querySelector(".rate").textContent = rate == null ? "—" : `${formatBytes(rate)}/s`;
    const eta = rate && rate > 0 && total > done ? ((total - done) / rate) * 1000 : null;
    row.querySelector(".eta").textContent = running && total > 0 && done >= total ? "0s" : formatDuration(eta);
    row.querySelector(".files").textContent = filesTotal > 0 ? `${filesDone} / ${filesTotal}` : "—";
    let attempt = task.attempts > 0 ? `${task.attempts} of ${MAX_ATTEMPTS}` : "—";
    if (!running && task.attempts > 0) attempt += ", retry waits";
    row.querySelector(".attempt").textContent = attempt;
  }

  function updateLiveCount() {
    const shown = [...liveRows.values()].filter((e) => !e.row.hidden).length;
    // A background tab tells how many uploads run.
    const running = [...liveRows.values()].filter((e) => e.task.task_status === "RUNNING").length;
    document.title = running ? `(${running}) vectorize` : "vectorize";
    $("live-count").textContent = liveRows.size ? `(${shown})` : "";
    $("live-empty").hidden = shown > 0;
    $("live-empty").textContent = liveRows.size ? "No live upload matches the filters." : "Nothing is uploading. Start an upload with the form.";
  }

  // Rates and ETAs move on between events, and fall when an upload stalls.
  setInterval(() => {
    for (const entry of liveRows.values()) {
      if (entry.task.task_status === "RUNNING") drawProgress(entry);
    }
  }, 1000);

  async function cancelTask(id) {
    const entry = liveRows.get(id);
    if (!entry) return;
    const tag = entry.task.model_tag;
    const sure = await confirmAction(
      "Cancel this upload?",
      `The upload of ${tag} stops and its partial files are removed.`,
      "Cancel upload",
    );
    const button = entry.row.querySelector(".cancel");
    if (!sure) {
      button.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const task = await api("DELETE", `/v1/upload/tasks/${encodeURIComponent(id)}`);
      onTask(task);
      announce(`The upload of ${tag} was cancelled.`);
    } catch (error) {
      button.disabled = false;
      button.textContent = "Cancel";
      announce(error.message);
      showRowError(entry.row, error.message);
    }
  }

  function showRowError(row, message) {
    let error = row.querySelector(".error");
    if (!error) {
      error = document.createElement("p");
      error.className = "error";
      row.appendChild(error);
    }
    error.textContent = message;
  }

  function showFinished(task, fromStream) {
    let row = historyRows.get(task.id);
    if (!row) {
      if (!matches(task)) return;
      row = $("finished-row").content.firstElementChild.cloneNode(true);
      row.dataset.taskId = task.id;
      historyRows.set(task.id, row);
      const list = $("history-list");
      if (fromStream) list.insertBefore(row, list.firstChild);
      else list.appendChild(row);
      if (fromStream) historyOffset += 1;
    }
    fillHead(row, task);
    setTime(row.querySelector(".finished-at"), task.finished_at);
    const start = task.started_at || task.created_at;
    const end = task.finished_at || task.updated_at;
    row.querySelector(".duration").textContent = formatDuration(Date.parse(end) - Date.parse(start));
    row.querySelector(".size").textContent = task.progress.bytes_total > 0 ? formatBytes(task.progress.bytes_total) : "—";
    row.querySelector(".attempts").textContent = String(task.attempts);
    const error = row.querySelector(".error");
    const failed = task.task_status !== "DONE" && (task.error_msg || task.error_code);
    error.hidden = !failed;
    row.querySelector(".error-code").textContent = failed ? task.error_code || "" : "";
    row.querySelector(".error-msg").textContent = failed ? task.error_msg || "" : "";
    $("history-empty").hidden = historyRows.size > 0;
  }

  /** Reads the newest finished tasks that match the filters, from the start. */
  async function loadHistory(more) {
    const generation = more ? historyGeneration : ++historyGeneration;
    const { status, source } = filters();
    const button = $("history-more");
    if (!more) {
      historyOffset = 0;
      historyRows.clear();
      $("history-list").replaceChildren();
    }
    if (status === "RUNNING" || status === "PENDING") {
      $("history-empty").hidden = false;
      button.hidden = true;
      return;
    }
    button.disabled = true;
    try {
      const page = await api("GET", `/v1/upload/tasks${query({ status, source, limit: PAGE, offset: historyOffset })}`);
      if (generation !== historyGeneration) return;
      historyOffset += page.items.length;
      for (const task of page.items) {
        if (isNews(task)) known.set(task.id, task);
        const latest = known.get(task.id);
        if (isFinished(latest.task_status)) showFinished(latest, false);
        else if (!liveRows.has(task.id)) showLive(latest);
      }
      button.hidden = historyOffset >= page.total;
      $("history-empty").hidden = historyRows.size > 0;
    } catch (error) {
      $("history-empty").hidden = false;
      $("history-empty").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  function applyFilters() {
    for (const entry of liveRows.values()) entry.row.hidden = !matches(entry.task);
    updateLiveCount();
    $("history-empty").textContent = "No finished task matches the filters.";
    loadHistory(false);
  }

  $("filter-status").addEventListener("change", applyFilters);
  $("filter-source").addEventListener("change", applyFilters);
  $("history-more").addEventListener("click", () => loadHistory(true));

  // ---------------------------------------------------------------- the event stream

  let stream = null;

  function setLinkState(state, text) {
    const element = $("link-state");
    element.dataset.state = state;
    element.textContent = text;
  }

  /** Splits a text/event-stream into events as the EventSource spec reads them. */
  function eventParser(onEvent) {
    let buffer = "";
    let type = "";
    let data = [];
    return (text) => {
      buffer += text;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) onEvent(type || "message", data.join("\n"));
          type = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") type = value;
          else if (field === "data") data.push(value);
        }
      }
    };
  }

  /**
   * Follows GET /v1/upload/events with fetch, so the key can go in a header
   * (EventSource sends none); reconnects with a growing pause, and reads the
   * finished tasks again on each connection so nothing missed stays missed.
   */
  function follow() {
    const controller = new AbortController();
    const run = { controller, stopped: false };
    let pause = 1000;
    (async () => {
      while (!run.stopped) {
        try {
          setLinkState("connecting", "Connecting…");
          const response = await fetch("/v1/upload/events", {
            headers: { Accept: "text/event-stream", ...authHeaders() },
            signal: controller.signal,
            cache: "no-store",
          });
          if (response.status === 401) {
            await askForKey(Boolean(storedKey()));
            continue;
          }
          if (!response.ok) throw await errorFrom(response);
          pause = 1000;
          setLinkState("live", "Live");
          loadHistory(false);
          await readEvents(response, run);
        } catch (error) {
          if (run.stopped) return;
          if (error && error.message === "declined") return;
        }
        if (run.stopped) return;
        setLinkState("retrying", `Reconnecting in ${Math.round(pause / 1000)}s…`);
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 15000);
      }
    })();
    return run;
  }

  async function readEvents(response, run) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parse = eventParser((type, data) => {
      if (type !== "task") return;
      try {
        onTask(JSON.parse(data));
      } catch {
        // One event that does not parse does not stop the others.
      }
    });
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => reader.cancel(), STREAM_SILENCE_MS);
    };
    watch();
    try {
      while (!run.stopped) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        parse(decoder.decode(value, { stream: true }));
      }
    } finally {
      clearTimeout(silence);
    }
  }

  function restartStream() {
    if (stream) {
      stream.stopped = true;
      stream.controller.abort();
    }
    stream = follow();
  }

  // ---------------------------------------------------------------- the store

  const modelRows = new Map();
  let storeOffset = 0;
  let storeGeneration = 0;
  let storeTimer = null;

  function pullCommand(model) {
    const root = `${location.origin}/mirror/${MIRROR_ROOTS[model.source]}`;
    if (model.source === "LOCAL") {
      return `HF_ENDPOINT=${shellWord(root)} hf download ${shellWord(`local/${model.model_tag}`)}`;
    }
    return `HF_ENDPOINT=${shellWord(root)} hf download ${shellWord(model.name)} --revision ${shellWord(model.revision || "main")}`;
  }

  function modelRow(model) {
    const row = $("model-row").content.firstElementChild.cloneNode(true);
    row.dataset.modelId = model.id;
    row.dataset.modelTag = model.model_tag;
    row.dataset.source = model.source;
    row.querySelector(".tag").textContent = model.model_tag;
    row.querySelector(".source").textContent = SOURCES[model.source] || model.source;
    row.querySelector(".size").textContent = formatBytes(model.size_bytes);
    row.querySelector(".file-count").textContent = String(model.files.length);
    setTime(row.querySelector(".created-at"), model.created_at);
    const command = row.querySelector(".pull-command");
    command.textContent = pullCommand(model);
    row.querySelector(".pull-key").hidden = !storedKey();
    const copy = row.querySelector(".copy");
    copy.setAttribute("aria-label", `Copy the pull command of ${model.model_tag}`);
    copy.addEventListener("click", () => copyCommand(command, copy));
    const files = row.querySelector(".files");
    for (const file of model.files) {
      const item = $("file-row").content.firstElementChild.cloneNode(true);
      item.querySelector(".file-path").textContent = file.path;
      item.querySelector(".file-size").textContent = formatBytes(file.size);
      item.querySelector(".file-sha").textContent = `sha256 ${file.sha256}`;
      files.appendChild(item);
    }
    const remove = row.querySelector(".delete");
    remove.setAttribute("aria-label", `Delete model ${model.model_tag}`);
    remove.addEventListener("click", () => deleteModel(model, row));
    return row;
  }

  async function copyCommand(command, button) {
    window.getSelection().selectAllChildren(command);
    let copied = false;
    try {
      await navigator.clipboard.writeText(command.textContent);
      copied = true;
    } catch {
      // No clipboard API off a secure origin (plain http to another host):
      // the text stays selected for a copy by hand.
      copied = document.execCommand("copy");
    }
    button.textContent = copied ? "Copied" : "Selected";
    announce(copied ? "The command was copied." : "The command is selected; copy it with your keyboard.");
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  }

  async function deleteModel(model, row) {
    const sure = await confirmAction(
      "Delete this model?",
      `${model.model_tag} and its files are removed from the store. This cannot be undone.`,
      "Delete model",
    );
    const button = row.querySelector(".delete");
    if (!sure) {
      button.focus();
      return;
    }
    button.disabled = true;
    try {
      await api("DELETE", `/v1/models/${encodeURIComponent(model.id)}`);
      row.remove();
      modelRows.delete(model.id);
      storeOffset = Math.max(0, storeOffset - 1);
      updateStoreCount(null);
      announce(`${model.model_tag} was deleted.`);
      $("store-title").focus();
    } catch (error) {
      button.disabled = false;
      showRowError(row, error.message);
      announce(error.message);
    }
  }

  let storeTotal = 0;

  function updateStoreCount(total) {
    if (total != null) storeTotal = total;
    else storeTotal = Math.max(modelRows.size, storeTotal - 1);
    $("store-count").textContent = storeTotal ? `(${storeTotal})` : "";
    $("store-empty").hidden = modelRows.size > 0;
  }

  /** Reads the store from the start, or its next page. */
  async function loadStore(more) {
    const generation = more ? storeGeneration : ++storeGeneration;
    const button = $("store-more");
    const source = $("store-source").value;
    button.disabled = true;
    try {
      const offset = more ? storeOffset : 0;
      const page = await api("GET", `/v1/models${query({ source, limit: PAGE, offset })}`);
      if (generation !== storeGeneration) return;
      const list = $("store-list");
      if (!more) {
        // Keep the rows already shown (an open file list stays open).
        const rows = page.items.map((model) => modelRows.get(model.id) || modelRow(model));
        const shown = new Set(page.items.map((m) => m.id));
        for (const [id, row] of modelRows) if (!shown.has(id)) row.remove();
        modelRows.clear();
        page.items.forEach((model, i) => modelRows.set(model.id, rows[i]));
        list.replaceChildren(...rows);
        storeOffset = page.items.length;
      } else {
        for (const model of page.items) {
          if (modelRows.has(model.id)) continue;
          const row = modelRow(model);
          modelRows.set(model.id, row);
          list.appendChild(row);
        }
        storeOffset += page.items.length;
      }
      updateStoreCount(page.total);
      $("store-empty").textContent = "The store holds no model yet.";
      button.hidden = storeOffset >= page.total;
    } catch (error) {
      $("store-empty").hidden = false;
      $("store-empty").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  function refreshStoreSoon() {
    clearTimeout(storeTimer);
    storeTimer = setTimeout(() => loadStore(false), 300);
  }

  $("store-source").addEventListener("change", () => loadStore(false));
  $("store-more").addEventListener("click", () => loadStore(true));

  // ---------------------------------------------------------------- upload forms

  function setOutcome(form, kind, text) {
    const outcome = form.querySelector(".outcome");
    outcome.dataset.kind = kind;
    outcome.textContent = text;
  }

  async function submitRemote(form, path, body) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    setOutcome(form, "", "Asking the service…");
    try {
      const task = await api("POST", path, body);
      onTask(task);
      setOutcome(form, "ok", `Queued ${task.model_tag}; follow it under Live uploads.`);
      return true;
    } catch (error) {
      setOutcome(form, "error", error.message);
      return false;
    } finally {
      button.disabled = false;
    }
  }

  $("form-hf").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const body = { model_tag: $("hf-repo").value.trim() };
    const revision = $("hf-revision").value.trim();
    if (revision) body.revision = revision;
    const patterns = $("hf-patterns").value.split(/[\s,]+/).filter(Boolean);
    if (patterns.length) body.allow_patterns = patterns;
    if (await submitRemote(form, "/v1/upload/huggingface", body)) $("hf-repo").value = "";
  });

  $("form-gh").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const written = $("gh-repo").value.trim().replace(/^https?:\/\/github\.com\//i, "").replace(/\.git$/, "").replace(/\/+$/, "");
    const parts = written.split("/");
    if (parts.length !== 2 || !parts[0] || !parts[1]) {
      setOutcome(form, "error", "Write the repository as owner/repo.");
      $("gh-repo").focus();
      return;
    }
    const body = { owner: parts[0], repo_name: parts[1] };
    const revision = $("gh-revision").value.trim();
    if (revision) body.revision = revision;
    if (await submitRemote(form, "/v1/upload/github", body)) $("gh-repo").value = "";
  });

  // The ZIP form: a file from the picker or dropped on the zone, sent with
  // XMLHttpRequest for its upload progress, then the service's report.
  let chosenFile = null;
  let sending = null;

  function chooseFile(file) {
    chosenFile = file || null;
    $("zip-chosen").textContent = file ? `${file.name} (${formatBytes(file.size)})` : "";
  }

  $("zip-file").addEventListener("change", () => chooseFile($("zip-file").files[0]));
  const drop = $("zip-drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.dataset.over = "";
  });
  drop.addEventListener("dragleave", () => delete drop.dataset.over);
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    delete drop.dataset.over;
    const file = event.dataTransfer.files[0];
    if (file) {
      $("zip-file").value = "";
      chooseFile(file);
    }
  });

  function drawSent(sent, total) {
    const fraction = total > 0 ? Math.min(1, sent / total) : 0;
    const percent = Math.floor(fraction * 100);
    const bar = $("zip-bar");
    bar.querySelector(".fill").style.transform = `scaleX(${fraction})`;
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", `${percent}%, ${formatBytes(sent)} of ${formatBytes(total)}`);
    $("zip-sent").textContent = `${formatBytes(sent)} / ${formatBytes(total)} sent (${percent}%)`;
  }

  function sendArchive(file, modelName) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      sending = xhr;
      xhr.open("POST", `/v1/upload/local${query({ model_name: modelName })}`);
      for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (event) => drawSent(event.loaded, event.lengthComputable ? event.total : file.size));
      xhr.upload.addEventListener("load", () => {
        drawSent(file.size, file.size);
        setOutcome($("form-zip"), "", "Sent; the service is checking the archive…");
      });
      xhr.addEventListener("load", () => resolve(xhr));
      xhr.addEventListener("error", () => reject(new ApiError(0, "", "The archive could not be sent: the connection failed.")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "", "Sending was stopped.")));
      const body = new FormData();
      body.append("file", file, file.name);
      xhr.send(body);
    });
  }

  function listItem(text, why) {
    const item = document.createElement("li");
    item.textContent = text;
    if (why) {
      const reason = document.createElement("span");
      reason.className = "why";
      reason.textContent = ` — ${why}`;
      item.appendChild(reason);
    }
    return item;
  }

  function showReport(report) {
    const fill = (id, items) => {
      const list = $(id);
      list.replaceChildren(...(items.length ? items : [listItem("none")]));
      list.dataset.count = String(items.length);
    };
    fill("zip-stored", report.models.map((m) => listItem(`${m.model_tag} — ${formatBytes(m.size_bytes)} in ${m.files.length} files`)));
    fill("zip-existing", report.existing_models.map((tag) => listItem(tag)));
    fill("zip-rejected", report.rejected.map((r) => listItem(r.name, r.reason)));
    $("zip-report").hidden = false;
  }

  $("form-zip").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const file = chosenFile;
    if (!file) {
      setOutcome(form, "error", "Choose a ZIP archive first.");
      $("zip-file").focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    $("zip-abort").hidden = false;
    $("zip-report").hidden = true;
    $("zip-progress").hidden = false;
    drawSent(0, file.size);
    setOutcome(form, "", `Sending ${file.name}…`);
    try {
      for (;;) {
        const xhr = await sendArchive(file, $("zip-name").value.trim());
        if (xhr.status === 401) {
          await askForKey(Boolean(storedKey())).catch(() => {
            throw new ApiError(401, "UNAUTHORIZED", "This service asks for its API key.");
          });
          continue;
        }
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // Not JSON.
        }
        if (xhr.status === 201 && body) {
          showReport(body);
          setOutcome(form, "ok", `Stored ${body.total_models} model${body.total_models === 1 ? "" : "s"} from ${file.name}.`);
          refreshStoreSoon();
        } else {
          const message = body && body.message ? body.message : `The service answered ${xhr.status}.`;
          setOutcome(form, "error", message);
        }
        break;
      }
    } catch (error) {
      setOutcome(form, "error", error.message);
    } finally {
      sending = null;
      button.disabled = false;
      $("zip-abort").hidden = true;
    }
  });

  $("zip-abort").addEventListener("click", () => {
    if (sending) sending.abort();
  });

  // Tabs: arrow keys move between them, as the ARIA tabs pattern has it.
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function selectTab(tab, focus) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
  }
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const at = tabs.indexOf(tab);
      const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      selectTab(tabs[(to + tabs.length) % tabs.length], true);
    });
  }

  // ---------------------------------------------------------------- start

  function reloadEverything() {
    restartStream();
    loadStore(false);
  }

  showKeyButton();
  reloadEverything();
})();
