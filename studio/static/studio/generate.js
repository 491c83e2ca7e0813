// The generation form: only LoRAs and embeddings of the chosen checkpoint's base-model family
// are offered (the others are hidden and disabled; one already chosen is cleared, and a note
// says so). The server refuses a mixed family anyway, naming the field, before queueing.
(function () {
  "use strict";
  var base = document.getElementById("id_base_version");
  if (!base) return;
  var note = document.getElementById("family-note");
  function family() {
    var option = base.options[base.selectedIndex];
    return option ? option.getAttribute("data-family") : null;
  }
  function update() {
    var wanted = family();
    var cleared = [];
    document.querySelectorAll("select[data-resource]").forEach(function (select) {
      Array.prototype.forEach.call(select.options, function (option) {
        var other = option.getAttribute("data-family");
        var misfit = Boolean(wanted && other && other !== wanted);
        option.disabled = misfit;
        option.hidden = misfit;
        if (misfit && option.selected) {
          cleared.push(option.textContent);
          select.value = "";
        }
      });
    });
    if (note) {
      note.textContent = cleared.length
        ? "Removed (another base model than this checkpoint): " + cleared.join("; ") + "."
        : "";
    }
  }
  base.addEventListener("change", update);
  update();

  // The checkpoint's native size and steps (data-width, data-height, data-steps on its
  // option) go into the fields when the checkpoint changes, unless the user typed their own.
  var fields = ["width", "height", "steps"].map(function (name) {
    return document.getElementById("id_" + name);
  });
  fields.forEach(function (input) {
    if (input) input.addEventListener("input", function () { input.setAttribute("data-typed", "1"); });
  });
  function native() {
    var option = base.options[base.selectedIndex];
    if (!option || !option.hasAttribute("data-width")) return;
    var values = [option.getAttribute("data-width"), option.getAttribute("data-height"),
      option.getAttribute("data-steps")];
    fields.forEach(function (input, i) {
      if (input && !input.hasAttribute("data-typed")) input.value = values[i];
    });
    var hint = document.getElementById("native-hint");
    if (hint) {
      document.getElementById("native-size").textContent = values[0] + "×" + values[1];
      document.getElementById("native-steps").textContent = values[2];
      hint.hidden = false;
    }
  }
  base.addEventListener("change", native);
})();
