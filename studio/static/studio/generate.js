// The generation form: LoRAs and embeddings for another base-model family than the chosen
// checkpoint are greyed out (the server refuses them anyway, naming the field).
(function () {
  "use strict";
  var base = document.getElementById("id_base_version");
  if (!base) return;
  function family() {
    var option = base.options[base.selectedIndex];
    return option ? option.getAttribute("data-family") : null;
  }
  function update() {
    var wanted = family();
    document.querySelectorAll("select[data-resource]").forEach(function (select) {
      Array.prototype.forEach.call(select.options, function (option) {
        var other = option.getAttribute("data-family");
        option.disabled = Boolean(wanted && other && other !== wanted);
      });
    });
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
