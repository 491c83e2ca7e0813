// One generation's page: while it is queued or running, poll its JSON status and show the
// progress: the badge and the text under the bar say the same thing (the API's
// progress.text), with the estimated time left; when it is done, failed or cancelled,
// reload so the page shows the image or the reason.
(function () {
  "use strict";
  var box = document.getElementById("generation-progress");
  if (!box) return;
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("generation-bar");
  var text = document.getElementById("generation-status-text");
  var badge = document.getElementById("generation-status");
  var eta = document.getElementById("generation-eta");
  var delay = 700;
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return "about " + seconds + " s left";
    return "about " + Math.round(seconds / 60) + " min left";
  }
  function show(data) {
    var step = data.progress.step, total = data.progress.total, label = data.progress.text;
    bar.max = total;
    if (data.status === "running" && step > 0) bar.value = step;
    else bar.removeAttribute("value");
    var ahead = data.status === "queued" && data.queue_position ? " (" + data.queue_position + " ahead)" : "";
    text.textContent = label + ahead;
    if (badge) {
      badge.textContent = label;
      badge.className = "badge generation-status status-" + data.status;
    }
    if (eta) eta.textContent = duration(data.progress.eta_seconds);
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        if (data.status !== "queued" && data.status !== "running") {
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
