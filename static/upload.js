/* Resumable chunked upload for the model upload form (no framework).
 *
 * On submit, the chosen file goes through the upload API in chunks:
 *   POST  /api/v1/uploads            {filename, size}        -> {id, offset}
 *   PATCH /api/v1/uploads/<id>       Upload-Offset: n, bytes  -> {offset}
 *   POST  /api/v1/uploads/<id>/complete                       -> {status, sha256}
 * with the session cookie and the X-CSRFToken header. After a network error it waits, asks
 * the server for its offset and goes on from there; an upload interrupted by a page reload
 * resumes too (the upload id is kept in localStorage per file name, size and date).
 * Then the form is submitted with the upload id instead of the file bytes.
 * Without JavaScript, the form posts the file itself.
 */
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.Blob || !window.Promise) return;

  var fileInput = form.querySelector('input[type="file"][name="file"]');
  var idInput = form.querySelector('input[name="upload_id"]');
  var errors = document.getElementById("file-errors");
  var wrap = document.getElementById("upload-progress-wrap");
  var bar = document.getElementById("upload-progress");
  var statusText = document.getElementById("upload-status");
  var submit = document.getElementById("upload-submit");
  var uploadsUrl = form.getAttribute("data-uploads-url");
  var chunkSize = parseInt(form.getAttribute("data-chunk-size"), 10) || 4 * 1024 * 1024;
  var MAX_RETRIES = 8;
  var csrf = (form.querySelector('input[name="csrfmiddlewaretoken"]') || {}).value || "";

  function HttpError(status, body) {
    this.status = status;
    this.body = body || {};
    this.message = (body && body.message) || ("The server answered " + status + ".");
  }

  function request(method, url, body, headers, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (onProgress && xhr.upload) {
        xhr.upload.onprogress = function (e) { if (e.lengthComputable) onProgress(e.loaded); };
      }
      xhr.onload = function () {
        var data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data || {});
        else reject(new HttpError(xhr.status, data));
      };
      xhr.onerror = function () { reject(new TypeError("network")); };
      xhr.ontimeout = xhr.onerror;
      xhr.send(body);
    });
  }

  function json(method, url, payload) {
    return request(method, url, payload ? JSON.stringify(payload) : null,
      payload ? { "Content-Type": "application/json" } : {});
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function showError(message) {
    errors.innerHTML = "";
    var li = document.createElement("li");
    li.textContent = message;
    errors.appendChild(li);
    errors.closest(".field").classList.add("has-error");
  }

  function clearError() {
    errors.innerHTML = "";
    errors.closest(".field").classList.remove("has-error");
  }

  function progress(done, total, note) {
    var pct = total ? Math.floor((done / total) * 100) : 0;
    bar.value = pct;
    statusText.textContent = (note ? note + " " : "") + pct + "% (" + human(done) + " of " + human(total) + ")";
  }

  function human(n) {
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  function stateKey(file) {
    return "atelier-upload:" + file.name + ":" + file.size + ":" + file.lastModified;
  }

  function remembered(file) {
    try { return window.localStorage.getItem(stateKey(file)); } catch (e) { return null; }
  }

  function remember(file, id) {
    try {
      if (id) window.localStorage.setItem(stateKey(file), id);
      else window.localStorage.removeItem(stateKey(file));
    } catch (e) { /* private mode: resume within this page only */ }
  }

  function detailUrl(id) { return uploadsUrl + "/" + id; }

  // An upload to continue: the remembered one if the server still has it open, else a new one.
  function start(file) {
    var known = remembered(file);
    var fresh = function () {
      return json("POST", uploadsUrl, { filename: file.name, size: file.size }).then(function (u) {
        remember(file, u.id);
        return u;
      });
    };
    if (!known) return fresh();
    return json("GET", detailUrl(known)).then(function (u) {
      return u.status === "open" || u.status === "complete" ? u : fresh();
    }, function (err) {
      if (err instanceof HttpError) { remember(file, null); return fresh(); }
      throw err;
    });
  }

  // Send the bytes from the server's offset, one chunk per PATCH, retrying network errors.
  function send(file, upload) {
    var offset = upload.offset;
    var failures = 0;
    function next() {
      if (offset >= file.size) return Promise.resolve();
      var end = Math.min(offset + chunkSize, file.size);
      progress(offset, file.size, "Uploading");
      return request("PATCH", detailUrl(upload.id), file.slice(offset, end),
        { "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset) },
        function (loaded) { progress(offset + loaded, file.size, "Uploading"); }
      ).then(function (u) {
        failures = 0;
        offset = u.offset;
        return next();
      }, function (err) {
        if (err instanceof HttpError && err.status === 409 && err.body.details &&
            typeof err.body.details.offset === "number") {
          offset = err.body.details.offset;
          return next();
        }
        if (err instanceof HttpError && err.status < 500) throw err;
        failures += 1;
        if (failures > MAX_RETRIES) throw new Error("The upload keeps failing; try again later. It will resume where it stopped.");
        var wait = Math.min(30000, 1000 * Math.pow(2, failures - 1));
        progress(offset, file.size, "Connection lost, retrying in " + Math.round(wait / 1000) + " s…");
        return sleep(wait).then(function () {
          return json("GET", detailUrl(upload.id)).then(function (u) { offset = u.offset; }, function () {});
        }).then(next);
      });
    }
    return next();
  }

  function uploadFile(file) {
    wrap.hidden = false;
    progress(0, file.size, "Starting");
    return start(file).then(function (upload) {
      if (upload.status === "complete") return upload;
      return send(file, upload).then(function () {
        progress(file.size, file.size, "Checking the file");
        return json("POST", detailUrl(upload.id) + "/complete");
      });
    }).then(function (done) {
      remember(file, null);
      progress(file.size, file.size, "Uploaded");
      return done;
    }, function (err) {
      if (err instanceof HttpError && err.status !== 409) remember(file, null);
      throw err;
    });
  }

  form.addEventListener("submit", function (event) {
    if (idInput.value || !fileInput.files || !fileInput.files.length) return;
    event.preventDefault();
    clearError();
    submit.disabled = true;
    uploadFile(fileInput.files[0]).then(function (upload) {
      idInput.value = upload.id;
      fileInput.disabled = true; // the bytes are on the server already
      form.submit();
    }).catch(function (err) {
      submit.disabled = false;
      wrap.hidden = true;
      showError(err && err.message && err.message !== "network"
        ? err.message : "The upload failed; try again.");
    });
  });

  fileInput.addEventListener("change", function () { idInput.value = ""; clearError(); });
})();
