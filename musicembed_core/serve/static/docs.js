// Renders the service's OpenAPI document as a plain page with curl examples (no CDN).
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token");
  const withToken = (u) => token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  document.getElementById("spec-link").href = withToken("openapi.json");
  document.getElementById("page-link").href = withToken("./");

  function curl(method, path, op) {
    const base = window.location.origin;
    const auth = token ? " -H 'Authorization: Bearer TOKEN'" : "";
    const example = path.replace("{track_id}", "jazz/b.flac");
    if (method === "post" && path === "/search") {
      return "curl" + auth + " -F audio=@song.mp3 '" + base + "/search?k=10'\n" +
        "curl" + auth + " -H 'Content-Type: application/json' -d '{\"text\": \"calm piano\"}' '" + base + "/search'";
    }
    const examples = {
      "get /search": ["", "?id=jazz/b.flac&k=5&filter=duration%20%3E%2060"],
      "get /tracks": ["", "?q=jazz"],
      "get /tracks/{track_id}": ["", "?vector=true"],
      "get /tracks/{track_id}/audio": [" -H 'Range: bytes=0-1023' -o part.bin", ""],
      "get /playlist": [" -o mix.m3u8", "?seed=jazz/b.flac&seed=rock/a.wav&n=25&max_per_folder=3&format=m3u8"],
    };
    const [opts, q] = examples[method + " " + path] || ["", ""];
    return "curl" + auth + opts + (method === "get" ? "" : " -X " + method.toUpperCase()) + " '" + base + example + q + "'";
  }

  fetch(withToken("openapi.json")).then((r) => r.json()).then((spec) => {
    document.getElementById("title").textContent = spec.info.title + " API " + spec.info.version;
    document.getElementById("description").textContent = spec.info.description || "";
    const root = document.getElementById("endpoints");
    root.textContent = "";
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const box = el("section", undefined, "endpoint");
        const h = el("h3");
        h.append(el("span", method.toUpperCase(), "method"), el("code", path));
        box.append(h);
        if (op.summary) box.append(el("p", op.summary));
        const params = op.parameters || [];
        if (params.length) {
          const t = el("table");
          const head = el("tr");
          ["parameter", "in", "type", "default", "description"].forEach((c) => head.append(el("th", c)));
          t.append(head);
          for (const p of params) {
            const s = p.schema || {};
            const type = s.type || (s.anyOf || []).map((x) => x.type).filter((x) => x && x !== "null").join("|") || "";
            const row = el("tr");
            [p.name + (p.required ? " *" : ""), p.in, type, s.default === undefined ? "" : JSON.stringify(s.default),
             p.description || ""].forEach((c) => row.append(el("td", c)));
            t.append(row);
          }
          box.append(t);
        }
        if (op.requestBody && op.requestBody.content) {
          box.append(el("p", "Body: " + Object.keys(op.requestBody.content).join(", ")));
        }
        box.append(el("pre", curl(method, path, op)));
        root.append(box);
      }
    }
  }).catch((err) => {
    const box = document.getElementById("error");
    box.textContent = "could not load openapi.json: " + err.message;
    box.hidden = false;
  });
})();
