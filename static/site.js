// The header's menu button on phones, and filter panels that start folded on phones.
// Without JavaScript the menu is simply always open (the CSS hides it only under html.js)
// and filters stay unfolded.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var narrow = window.matchMedia("(max-width: 760px)");

  function setUpMenu() {
    var button = document.querySelector(".menu-toggle");
    var bar = document.querySelector(".topbar");
    if (!button || !bar) return;
    function set(open) {
      bar.classList.toggle("menu-open", open);
      button.setAttribute("aria-expanded", open ? "true" : "false");
    }
    button.addEventListener("click", function () {
      set(!bar.classList.contains("menu-open"));
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && bar.classList.contains("menu-open")) {
        set(false);
        button.focus();
      }
    });
  }

  function setUpFilters() {
    var panels = document.querySelectorAll("details.fold-narrow");
    function fit() {
      for (var i = 0; i < panels.length; i++) {
        if (!panels[i].hasAttribute("data-touched")) panels[i].open = !narrow.matches;
      }
    }
    for (var i = 0; i < panels.length; i++) {
      panels[i].querySelector("summary").addEventListener("click", function (event) {
        event.currentTarget.parentNode.setAttribute("data-touched", "");
      });
    }
    fit();
    if (narrow.addEventListener) narrow.addEventListener("change", fit);
  }

  function ready() {
    setUpMenu();
    setUpFilters();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
