// One generation's page: while it is queued or running, poll its JSON status and show the
// progress; when it is done or failed, reload so the page shows the image or the reason.
(function () {
  "use strict";
  var box = document.getElementById("generation-progress");
  if (!box) return;
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("generation-bar");
  var text = document.getElementById("generation-status-text");
  var delay = 700;
  function show(data) {
    var step = data.progress.step, total = data.progress.total;
    bar.max = total;
    if (data.status === "queued") {
      bar.removeAttribute("value");
      var ahead = data.queue_position;
      text.textContent = "Queued" + (ahead ? " (" + ahead + " ahead)" : "") + "…";
    } else if (step === 0) {
      bar.removeAttribute("value");
      text.textContent = "Loading the model…";
    } else {
      bar.value = step;
      text.textContent = "Step " + step + " of " + total;
    }
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (data.status === "succeeded" || data.status === "failed") {
          window.location.reload();
          return;
        }
        show(data);
        delay = 700;
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 10000);
        text.textContent = "Waiting for the server…";
        window.setTimeout(poll, delay);
      });
  }
  window.setTimeout(poll, delay);
})();
