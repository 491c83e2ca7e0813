// The job page's live section: while the job is not finished, fetch the section's HTML
// again every couple of seconds and swap it in; stop once the job is terminal.
(function () {
  "use strict";
  var box = document.getElementById("job-live");
  if (!box) return;
  var url = box.getAttribute("data-live-url");
  var every = parseInt(box.getAttribute("data-poll-ms"), 10) || 2000;
  var delay = every;
  function finished(el) {
    return el.getAttribute("data-terminal") === "true";
  }
  function swap(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    var fresh = holder.content.getElementById
      ? holder.content.getElementById("job-live")
      : holder.content.querySelector("#job-live");
    if (!fresh) throw new Error("no live section in the answer");
    keepGrids(box, fresh);
    box.replaceWith(fresh);
    box = fresh;
  }
  // Each round's sample grid arrives with the round; the grids already shown are moved into
  // the fresh section as they are, so they are not fetched and drawn again on every poll.
  function keepGrids(old, fresh) {
    var shown = {};
    old.querySelectorAll(".round-grid[data-round]").forEach(function (fig) {
      shown[fig.getAttribute("data-round") + " " + fig.querySelector("img").getAttribute("src")] = fig;
    });
    fresh.querySelectorAll(".round-grid[data-round]").forEach(function (fig) {
      var key = fig.getAttribute("data-round") + " " + fig.querySelector("img").getAttribute("src");
      if (shown[key]) fig.replaceWith(shown[key]);
    });
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        swap(html);
        if (finished(box)) return;
        delay = every;
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 30000);
        window.setTimeout(poll, delay);
      });
  }
  if (!finished(box)) window.setTimeout(poll, delay);
})();
