"""static/upload.js run by Node against a live site: chunks, a dropped connection, resume.

No browser is available to the suite, so a few lines of JavaScript stand in for the page: the
form's elements, ``localStorage`` and an ``XMLHttpRequest`` built on Node's ``fetch`` that
talks to the live server with the logged-in session's cookies. The script under test is the
real file, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings

from registry.models import Model, ModelFile, Upload
from tests.registry.factories import lora_bytes

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _node() -> None:
    """Never skipped: ``scripts/services.sh`` (``make test``, CI) installs Node.js where it is
    missing, so a machine without it fails here with the fix rather than passing silently."""
    assert shutil.which("node"), "Node.js is needed: scripts/services.sh installs it (nodejs)"


HARNESS = r"""
const fs = require("fs");
// Node 18 (Debian 12's nodejs) has File in "buffer" only; Node 20 has it as a global too.
const File = globalThis.File || require("buffer").File;
const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const log = { requests: [], errors: "", submitted: null };
const cookie = cfg.cookie;

function el(extra) {
  return Object.assign({
    attrs: {}, value: "", hidden: false, disabled: false, textContent: "", children: [],
    listeners: {},
    getAttribute(name) { return this.attrs[name]; },
    addEventListener(type, fn) { this.listeners[type] = fn; },
    appendChild(child) { this.children.push(child); this.textContent += child.textContent; },
    classList: { add() {}, remove() {} },
    closest() { return { classList: { add() {}, remove() {} } }; },
  }, extra || {});
}
const errors = el();
Object.defineProperty(errors, "innerHTML", {
  set() { this.children = []; this.textContent = ""; },
});
const file = new File([fs.readFileSync(cfg.path)], cfg.filename, { lastModified: 1700000000000 });
const fileInput = el({ files: [file] });
const idInput = el();
const csrfInput = el({ value: cfg.csrf });
const form = el({
  attrs: { "data-uploads-url": cfg.uploadsUrl, "data-chunk-size": String(cfg.chunkSize) },
  querySelector(sel) {
    if (sel.includes('type="file"')) return fileInput;
    if (sel.includes("upload_id")) return idInput;
    if (sel.includes("csrfmiddlewaretoken")) return csrfInput;
    return null;
  },
  async submit() {
    const body = new FormData();
    for (const [k, v] of Object.entries(cfg.fields)) body.append(k, v);
    body.append("csrfmiddlewaretoken", cfg.csrf);
    body.append("upload_id", idInput.value);
    if (!fileInput.disabled) body.append("file", file);
    const r = await fetch(cfg.site + "/upload/", {
      method: "POST", body, redirect: "manual",
      headers: { Cookie: cookie, Referer: cfg.site + "/upload/" },
    });
    log.submitted = { status: r.status, location: r.headers.get("location") };
    finish();
  },
});
const nodes = {
  "upload-form": form, "file-errors": errors, "upload-progress-wrap": el(),
  "upload-progress": el(), "upload-status": el(), "upload-submit": el(),
};
const store = {};
globalThis.window = globalThis;
globalThis.document = { getElementById: (id) => nodes[id] || null, createElement: () => el() };
globalThis.localStorage = {
  getItem: (k) => (k in store ? store[k] : null),
  setItem: (k, v) => { store[k] = String(v); },
  removeItem: (k) => { delete store[k]; },
};
let patches = 0;
globalThis.XMLHttpRequest = class {
  constructor() { this.headers = {}; this.upload = {}; }
  open(method, url) { this.method = method; this.url = url; }
  setRequestHeader(k, v) { this.headers[k] = v; }
  async send(body) {
    let sendBody = body;
    let dropAfter = false;
    if (this.method === "PATCH") {
      patches += 1;
      if (patches === cfg.dropPatch) {  // send half the chunk, then "lose" the connection
        sendBody = body.slice(0, Math.floor(body.size / 2));
        dropAfter = true;
      }
    }
    try {
      const r = await fetch(cfg.site + this.url, {
        method: this.method, body: sendBody,
        headers: Object.assign({ Cookie: cookie, Referer: cfg.site + "/upload/" }, this.headers),
      });
      const text = await r.text();
      log.requests.push([this.method, this.url.replace(/[0-9a-f-]{36}/, "ID"),
                         this.headers["Upload-Offset"] || null,
                         sendBody && sendBody.size !== undefined ? sendBody.size : null,
                         dropAfter ? "dropped" : r.status]);
      if (dropAfter) { this.onerror(); return; }  // the client saw the connection die
      this.status = r.status; this.responseText = text; this.onload();
    } catch (e) { this.onerror(); }
  }
};
function finish() {
  log.errors = errors.textContent;
  fs.writeFileSync(cfg.out, JSON.stringify(log));
  process.exit(0);
}
require(cfg.script);
form.listeners.submit({ preventDefault() {} });
const wait = setInterval(() => {
  if (errors.textContent) { clearInterval(wait); finish(); }
}, 50);
setTimeout(() => { log.errors = "timeout: " + errors.textContent; finish(); }, 60000);
"""


def _logged_in_session(site: str, user: Any) -> tuple[str, str, str, int]:
    """A browser-like session: cookies, the page's CSRF token, uploads URL and chunk size."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    page = session.get(f"{site}/upload/", timeout=30)
    assert page.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    uploads = re.search(r'data-uploads-url="([^"]+)"', page.text)
    chunk = re.search(r'data-chunk-size="(\d+)"', page.text)
    assert csrf and uploads and chunk
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    return cookie, csrf.group(1), uploads.group(1), int(chunk.group(1))


def run_upload_js(tmp_path: Path, site: str, user: Any, file: Path, *, drop_patch: int) -> dict:  # type: ignore[type-arg]
    cookie, csrf, uploads_url, chunk_size = _logged_in_session(site, user)
    config = {
        "site": site,
        "cookie": cookie,
        "csrf": csrf,
        "uploadsUrl": uploads_url,
        "chunkSize": chunk_size,
        "path": str(file),
        "filename": file.name,
        "dropPatch": drop_patch,
        "script": str(Path(django_settings.BASE_DIR) / "static" / "upload.js"),
        "out": str(tmp_path / "log.json"),
        "fields": {
            "name": "From the browser",
            "kind": "lora",
            "visibility": "public",
            "version_name": "v1",
            "tags": "js",
            "trigger_words": "",
            "description": "",
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "harness.js").write_text(HARNESS)
    done = subprocess.run(
        ["node", str(tmp_path / "harness.js"), str(tmp_path / "config.json")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "log.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _small_chunks(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_UPLOAD_CHUNK_BYTES = 4096
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_upload_js_resumes_from_the_servers_offset_after_a_dropped_connection(
    live_server,
    make_user: Callable[..., Any],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # given a LoRA of several chunks and a connection that dies halfway through the 2nd PATCH
    alice = make_user("alice")
    data = lora_bytes(seed=21, rank=8)
    path = tmp_path / "browser-lora.safetensors"
    path.write_bytes(data)
    # when the page's script uploads it and submits the form
    log = run_upload_js(tmp_path, live_server.url, alice, path, drop_patch=2)
    # then after the drop it asked the server where it stood and went on from that offset
    methods = [r[0] for r in log["requests"]]
    dropped = methods.index("PATCH") + 1
    assert log["requests"][dropped][4] == "dropped"
    assert log["requests"][dropped + 1][0] == "GET"
    assert log["requests"][dropped + 2][2] == str(4096 + 2048)
    # and the form created the model from the completed upload
    assert log["submitted"]["status"] == 302, log
    model = Model.objects.get(name="From the browser")
    assert log["submitted"]["location"].startswith(f"/models/{model.pk}/")
    model_file = ModelFile.objects.get(version__model=model)
    assert model_file.blob_id == hashlib.sha256(data).hexdigest()
    assert Upload.objects.count() == 1


def test_upload_js_shows_a_refused_file_next_to_the_field_and_does_not_submit(
    live_server,
    make_user: Callable[..., Any],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("echo pwned",))

    alice = make_user("alice")
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    log = run_upload_js(tmp_path, live_server.url, alice, path, drop_patch=0)
    assert "system" in log["errors"]
    assert log["submitted"] is None
    assert not Model.objects.exists()
