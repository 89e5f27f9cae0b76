// Step by step and Copy on answers. Without JavaScript the hint and check forms post and the page is
// rendered again; here they post with fetch and only the answer block is replaced (server-rendered and
// escaped, as ask.js does). Listeners sit on the document, so answers ask.js inserts later work too.
(function () {
  "use strict";
  document.documentElement.classList.add("js");  // shows the Copy buttons (steps.css)

  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("steps-form")) return;
    const block = form.closest(".answer-block");
    if (!block || !window.fetch || form.dataset.plain) return;  // the plain form post still works
    event.preventDefault();
    const submitter = event.submitter;
    function plainPost() {  // trouble: post the form the ordinary way (the page is rendered again)
      form.dataset.plain = "1";
      for (const button of form.querySelectorAll("button")) button.disabled = false;
      form.requestSubmit(submitter);
    }
    const data = new FormData(form);
    if (submitter && submitter.name) data.append(submitter.name, submitter.value);
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    let response;
    try {
      // getAttribute: `form.action` would be a control named "action", were there one.
      response = await fetch(form.getAttribute("action"), {method: "POST", body: data, credentials: "same-origin"});
    } catch (e) {
      plainPost();
      return;
    }
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(block.id);
    if (!response.ok || !fresh) { plainPost(); return; }
    const messages = page.querySelector(".messages");
    block.replaceWith(document.adoptNode(fresh));
    if (messages) fresh.prepend(document.adoptNode(messages));
    const steps = fresh.querySelector(".steps");
    const focus = fresh.querySelector(".check-result, .step-list .step:last-child, .final");
    if (focus) { focus.tabIndex = -1; focus.focus({preventScroll: true}); }
    if (steps) steps.scrollIntoView({block: "nearest"});
  });

  document.addEventListener("click", async function (event) {
    const button = event.target instanceof Element ? event.target.closest("button.copy-button") : null;
    if (!button) return;
    const text = button.dataset.copy || "";
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch (e) {
      // Not a secure context (plain http on a school network): the old way.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "copy-scratch";
      document.body.append(area);
      area.select();
      copied = document.execCommand("copy");
      area.remove();
    }
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = copied ? "Copied 已复制" : "Copy failed 复制失败";
    setTimeout(function () { button.textContent = label; }, 2000);
  });
})();
