// The musicembed page: plain JavaScript against the JSON API (no build step, no CDN).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(window.location.search).get("token");
  let embeddings = [];
  let lastQuery = null;

  // Every request carries the token when the page was opened with ?token=...
  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function api(path, options) {
    return fetch(withToken(path), options).then(async (resp) => {
      let body = null;
      try { body = await resp.json(); } catch (e) { body = null; }
      if (!resp.ok) {
        const msg = body && body.error ? body.error : resp.status + " " + resp.statusText;
        throw new Error(msg);
      }
      return body;
    });
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(message) { $("status").textContent = message || ""; }

  function current() {
    const name = $("embedding").value;
    return embeddings.find((e) => e.name === name) || embeddings[0];
  }

  function commonParams() {
    const params = new URLSearchParams();
    const k = parseInt($("k").value, 10);
    params.set("k", Number.isFinite(k) && k > 0 ? String(k) : "10");
    const filter = $("filter").value.trim();
    if (filter) params.set("filter", filter);
    if (embeddings.length > 1) params.set("embedding", current().name);
    return params;
  }

  function updateQueryKinds() {
    const emb = current();
    const text = emb && emb.queries.includes("text");
    $("text-query").disabled = !text;
    $("text-search").disabled = !text;
    $("text-hint").textContent = text ? "" :
      "(this embedding has no text projector: search by track or by audio file)";
    const total = embeddings.map((e) => e.count + " tracks (" + e.name + ", " + e.dim + " dims)");
    $("library-info").textContent = "Library: " + total.join("; ");
  }

  function fmtDuration(sec) {
    if (typeof sec !== "number" || !isFinite(sec)) return "";
    const m = Math.floor(sec / 60), s = Math.round(sec % 60);
    return m + ":" + String(s).padStart(2, "0");
  }

  function audioUrl(id) {
    return withToken("tracks/" + id.split("/").map(encodeURIComponent).join("/") + "/audio");
  }

  function render(result, label) {
    const list = $("results");
    list.textContent = "";
    const title = $("results-title");
    title.hidden = false;
    title.textContent = result.hits.length + " results for " + label;
    if (!result.hits.length) setStatus("no results (is the filter too strict?)");
    for (const hit of result.hits) {
      const li = document.createElement("li");
      li.className = "hit";
      li.dataset.id = hit.id;

      const head = document.createElement("div");
      head.className = "hit-head";
      const name = document.createElement("span");
      name.className = "hit-id";
      name.textContent = hit.id;
      const score = document.createElement("span");
      score.className = "hit-score muted";
      const dur = hit.metadata ? fmtDuration(hit.metadata.duration) : "";
      score.textContent = "score " + Number(hit.score).toFixed(4) + (dur ? " · " + dur : "");
      head.append(name, score);

      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = audioUrl(hit.id);

      const actions = document.createElement("div");
      actions.className = "hit-actions";
      const more = document.createElement("button");
      more.type = "button";
      more.className = "more-like-this";
      more.textContent = "More like this";
      more.addEventListener("click", () => searchById(hit.id));
      const mix = document.createElement("a");
      mix.className = "mix";
      const p = new URLSearchParams({ seed: hit.id, n: "25", format: "m3u8", entries: "url" });
      if (embeddings.length > 1) p.set("embedding", current().name);
      mix.href = withToken("playlist?" + p.toString());
      mix.textContent = "Mix (.m3u8)";
      mix.setAttribute("download", "mix.m3u8");
      actions.append(more, mix);

      li.append(head, audio, actions);
      list.append(li);
    }
  }

  function run(label, promise) {
    showError("");
    setStatus("searching…");
    document.body.classList.add("busy");
    return promise.then((result) => {
      setStatus("");
      render(result, label);
    }).catch((err) => {
      setStatus("");
      $("results").textContent = "";
      $("results-title").hidden = true;
      showError(err.message);
    }).finally(() => document.body.classList.remove("busy"));
  }

  function searchById(id) {
    $("track-id").value = id;
    lastQuery = () => searchById(id);
    const params = commonParams();
    params.set("id", id);
    return run("“" + id + "”", api("search?" + params.toString()));
  }

  function searchByText(text) {
    lastQuery = () => searchByText(text);
    const params = commonParams();
    const body = { text: text, k: parseInt(params.get("k"), 10) };
    if (params.get("filter")) body.filter = params.get("filter");
    if (params.get("embedding")) body.embedding = params.get("embedding");
    return run("“" + text + "”", api("search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }));
  }

  function searchByFile(file) {
    lastQuery = () => searchByFile(file);
    const params = commonParams();
    const form = new FormData();
    form.append("audio", file, file.name);
    return run("the file " + file.name, api("search?" + params.toString(), { method: "POST", body: form }));
  }

  let suggestTimer = null;
  function suggest() {
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(() => {
      const q = $("track-id").value.trim();
      const params = new URLSearchParams({ q: q, limit: "50" });
      if (embeddings.length > 1) params.set("embedding", current().name);
      api("tracks?" + params.toString()).then((res) => {
        const list = $("track-ids");
        list.textContent = "";
        for (const id of res.ids) {
          const opt = document.createElement("option");
          opt.value = id;
          list.append(opt);
        }
      }).catch(() => {});
    }, 150);
  }

  function wire() {
    $("text-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("text-query").value.trim();
      if (text) searchByText(text);
    });
    $("id-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("track-id").value.trim();
      if (id) searchById(id);
    });
    $("track-id").addEventListener("input", suggest);
    $("file-input").addEventListener("change", () => {
      const file = $("file-input").files[0];
      if (file) searchByFile(file);
    });
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      if (file) searchByFile(file);
    });
    $("embedding").addEventListener("change", () => { updateQueryKinds(); suggest(); });
    $("filter").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && lastQuery) { ev.preventDefault(); lastQuery(); }
    });
  }

  wire();
  api("embeddings").then((res) => {
    embeddings = res.embeddings;
    const select = $("embedding");
    for (const e of embeddings) {
      const opt = document.createElement("option");
      opt.value = e.name;
      opt.textContent = e.name + " (" + e.encoder + ", " + e.count + " tracks)";
      select.append(opt);
    }
    $("embedding-row").hidden = embeddings.length < 2;
    updateQueryKinds();
    suggest();
    document.body.dataset.ready = "1";
  }).catch((err) => showError(err.message));
})();
