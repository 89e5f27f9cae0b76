// Follow-up questions on an answer ("Ask about this answer 追问"), their Stop and their Try again /
// Another answer. Without JavaScript the forms post and the question's page is rendered again (it
// reloads every few seconds while a reply is written). Here the forms post with fetch and only the
// follow-ups box is replaced with the server's (rendered and escaped there, as ask.js and steps.js do);
// a reply being written streams in over server-sent events, its text inserted with textContent only.
(function () {
  "use strict";
  const streams = new Map();  // follow-up id -> its EventSource

  // Follow one reply: pieces go into its <pre>s as text; at the end the server's rendering replaces it.
  function follow(item) {
    const id = item.dataset.id;
    if (!id || streams.has(id) || !window.EventSource) return;
    let last = 0;
    const source = new EventSource(item.dataset.stream);
    streams.set(id, source);
    function end() {
      source.close();
      streams.delete(id);
      refresh(id);
    }
    source.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type === "done") { end(); return; }
      const seq = parseInt(message.lastEventId || "0", 10);
      if (seq && seq <= last) return;  // shown already (a reconnect sends Last-Event-ID)
      if (seq) last = seq;
      const current = document.getElementById("followup-" + id);
      if (!current) { source.close(); streams.delete(id); return; }
      if (event.type === "reasoning") {
        const box = current.querySelector(".follow-up-reasoning");
        const pre = box && box.querySelector("pre");
        if (!pre) return;
        box.hidden = false;
        pre.append(document.createTextNode(event.text));
        pre.scrollTop = pre.scrollHeight;
      } else if (event.type === "answer") {
        const box = current.querySelector(".follow-up-reasoning");
        if (box) box.open = false;
        const pre = current.querySelector(".answer-stream");
        if (pre) pre.append(document.createTextNode(event.text));
      }
    };
    source.onerror = function () {
      // CONNECTING: the browser reconnects by itself (with Last-Event-ID). CLOSED: it gave up; show
      // what the server has now (a reply still being written starts a new stream from there).
      if (source.readyState === EventSource.CLOSED) {
        streams.delete(id);
        setTimeout(function () { refresh(id); }, 2000);
      }
    };
  }

  async function refresh(id) {
    let response;
    try {
      response = await fetch("/followups/" + encodeURIComponent(id), {credentials: "same-origin"});
    } catch (e) {
      return;
    }
    if (!response.ok) return;
    const template = document.createElement("template");
    template.innerHTML = await response.text();  // server-rendered and escaped: trusted markup
    const fresh = template.content.querySelector(".follow-up");
    const current = document.getElementById("followup-" + id);
    if (fresh && current) current.replaceWith(fresh);
  }

  function followAll(root) {
    root.querySelectorAll(".follow-up[data-stream]").forEach(follow);
  }

  // Answers that ask.js inserts later (and follow-ups that a replaced box brings) are followed too.
  new MutationObserver(function (changes) {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (!(node instanceof Element)) continue;
        if (node.matches(".follow-up[data-stream]")) follow(node);
        followAll(node);
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener("DOMContentLoaded", function () { followAll(document); });

  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("live-form")) return;
    const box = form.closest(".follow-ups");
    if (!box || !window.fetch || form.dataset.plain) return;  // the plain form post still works
    event.preventDefault();
    function plainPost() {
      form.dataset.plain = "1";
      for (const button of form.querySelectorAll("button")) button.disabled = false;
      form.requestSubmit();
    }
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    let response;
    try {
      response = await fetch(form.getAttribute("action"), {
        method: "POST", body: new FormData(form), credentials: "same-origin",
      });
    } catch (e) {
      plainPost();
      return;
    }
    // The question's page comes back (after its redirect, or with the form's error and the words
    // typed): its follow-ups box replaces this one.
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(box.id);
    if (!fresh) { plainPost(); return; }
    const messages = page.querySelector(".messages");
    box.replaceWith(document.adoptNode(fresh));
    if (messages) fresh.prepend(document.adoptNode(messages));
    const items = fresh.querySelectorAll(".follow-up");
    const focus = fresh.querySelector(".errorlist, .messages") || items[items.length - 1];
    if (focus) {
      focus.tabIndex = -1;
      focus.focus({preventScroll: true});
      focus.scrollIntoView({block: "nearest"});
    }
  });
})();
