// The review list (tutor/templates/tutor/review.html): "All on this page" ticks every answer, and the bar
// says how many are ticked. Without JavaScript the boxes are ticked one by one. No inline script: the
// site's Content-Security-Policy allows scripts from 'self' only.
(function () {
  const all = document.getElementById("select-all");
  const boxes = Array.from(document.querySelectorAll("#review-list input.pick"));
  const count = document.getElementById("picked-count");
  if (!all || !boxes.length) return;
  all.closest("label").hidden = false;
  function update() {
    const n = boxes.filter((b) => b.checked).length;
    count.textContent = n ? n + " selected 已选" + n + "个" : "";
    all.checked = n === boxes.length;
    all.indeterminate = n > 0 && n < boxes.length;
  }
  all.addEventListener("change", () => {
    boxes.forEach((b) => { b.checked = all.checked; });
    update();
  });
  boxes.forEach((b) => b.addEventListener("change", update));
  update();
})();
