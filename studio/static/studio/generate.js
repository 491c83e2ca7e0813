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
})();
