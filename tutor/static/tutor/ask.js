// The ask page: ask through the JSON API, stream a live answer over server-sent events.
// Model text is only ever inserted with textContent; rendered answers (math as MathML) come from the
// server, which escapes everything, via /questions/<id>/answer.
(function () {
  "use strict";
  const form = document.getElementById("ask-form");
  const live = document.getElementById("live");
  const statusLine = document.getElementById("live-status");
  const reasoning = document.getElementById("reasoning");
  const reasoningBox = document.getElementById("reasoning-box");
  const answerStream = document.getElementById("answer-stream");
  const answerHtml = document.getElementById("answer-html");

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = "status" + (kind ? " " + kind : "");
  }

  function reset() {
    live.hidden = false;
    reasoning.textContent = "";
    answerStream.textContent = "";
    answerHtml.replaceChildren();
    reasoningBox.open = true;
    reasoningBox.hidden = false;
  }

  async function showAnswer(questionId) {
    const response = await fetch("/questions/" + questionId + "/answer", {credentials: "same-origin"});
    if (!response.ok) {
      setStatus("Could not load the answer (" + response.status + ").", "error");
      return null;
    }
    const html = await response.text();  // server-rendered and escaped: trusted markup
    const template = document.createElement("template");
    template.innerHTML = html;
    answerHtml.replaceChildren(template.content);
    const block = answerHtml.querySelector(".answer-block");
    return block ? block.dataset.outcome : null;
  }

  function finish(outcome) {
    answerStream.textContent = "";
    showStop(null);
    reasoningBox.open = false;  // the reasoning folds away once the answer is there
    if (outcome !== "failed") reasoningBox.hidden = true;  // the answer has its own
    // The answer block says what happened (from the bank, new, no answer ...): a status line above it
    // would only repeat it.
    if (outcome) setStatus("", "");
    else setStatus("No answer 没有答案", "error");
  }

  // The Stop button of a live answer: on the ask page it is made here; the question page has a form.
  let stopButton = document.getElementById("stop-button");
  function showStop(questionId) {
    if (!live) return;
    // style.display, not `hidden`: the site's button rule sets display, which would win over `hidden`.
    if (questionId === null) { if (stopButton) stopButton.style.display = "none"; return; }
    if (!stopButton) {
      stopButton = document.createElement("button");
      stopButton.type = "button";
      stopButton.id = "stop-button";
      stopButton.className = "secondary";
      stopButton.textContent = "Stop 停止";
      statusLine.after(stopButton);
    }
    stopButton.style.display = "";
    stopButton.onclick = async function (click) {
      click.preventDefault();
      stopButton.disabled = true;
      const token = document.querySelector("input[name=csrfmiddlewaretoken]");
      await fetch("/api/questions/" + encodeURIComponent(questionId) + "/stop", {
        method: "POST",
        credentials: "same-origin",
        headers: {"X-CSRFToken": token ? token.value : ""},
      });
      stopButton.disabled = false;
    };
  }

  // Follow a live answer over server-sent events. Every piece carries its number (the SSE id), and any
  // web server can send any stream: after a broken connection the stream is opened again, on whichever
  // server answers, from the last piece shown — the browser's own reconnect sends Last-Event-ID, a new
  // EventSource says ?after=N — so nothing is shown twice or skipped.
  function follow(questionId, streamUrl) {
    setStatus("Thinking… 正在思考", "busy");
    showStop(questionId);
    let lastSeq = 0;
    let failures = 0;
    let source = null;
    let ended = false;

    async function end() {
      ended = true;
      if (source) source.close();
      finish(await showAnswer(questionId));
    }

    function open() {
      const url = lastSeq ? streamUrl + (streamUrl.includes("?") ? "&" : "?") + "after=" + lastSeq : streamUrl;
      source = new EventSource(url);
      source.onopen = function () {
        failures = 0;
        setStatus("Thinking… 正在思考", "busy");
      };
      source.onmessage = async function (message) {
        let event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        if (event.type === "done") { await end(); return; }
        const seq = parseInt(message.lastEventId || "0", 10);
        if (seq && seq <= lastSeq) return;  // shown already
        if (seq) lastSeq = seq;
        if (event.type === "reasoning") {
          reasoning.append(document.createTextNode(event.text));
          reasoning.scrollTop = reasoning.scrollHeight;
        } else if (event.type === "answer") {
          reasoningBox.open = false;
          answerStream.append(document.createTextNode(event.text));
        }
      };
      source.onerror = function () {
        if (ended) return;
        setStatus("Reconnecting… 正在重新连接", "busy");
        // CONNECTING: the browser reconnects by itself, with Last-Event-ID. CLOSED: it gave up (an error
        // page from a proxy, a server that went away): open a new stream after a pause.
        if (source.readyState !== EventSource.CLOSED) return;
        failures += 1;
        setTimeout(reconnect, Math.min(1000 * 2 ** Math.min(failures - 1, 4), 15000));
      };
    }

    async function reconnect() {
      if (ended) return;
      try {
        const response = await fetch("/api/questions/" + encodeURIComponent(questionId), {credentials: "same-origin"});
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          ended = true;
          setStatus("This question cannot be shown (" + response.status + ").", "error");
          return;
        }
        if (response.ok) {
          const data = await response.json();
          if (data.status !== "generating") { await end(); return; }
        }
      } catch (e) {
        // No server answered: try the stream again after the next pause.
      }
      open();
    }

    open();
  }

  if (form) {
    const box = document.getElementById("question");
    const count = document.getElementById("char-count");
    const maxChars = parseInt(box.dataset.maxChars || "0", 10);
    // Count characters as the server does (code points, spaces at the ends trimmed); never cut.
    function updateCount() {
      if (!count || !maxChars) return;
      const n = Array.from(box.value.trim()).length;
      count.textContent = n > maxChars
        ? n + " / " + maxChars + ": too long, shorten it 太长了，请缩短"
        : (n ? n + " / " + maxChars : "");
      count.className = n > maxChars ? "error" : "";
    }
    box.addEventListener("input", updateCount);
    updateCount();
    document.querySelectorAll("button.example").forEach(function (button) {
      button.addEventListener("click", function () {
        box.value = button.textContent;
        updateCount();
      });
    });
    // Add the question to "My questions" at once (textContent only: the text is the student's).
    function remember(questionId, text) {
      const list = document.querySelector("ul.history");
      if (!list) return;
      const empty = list.querySelector("li.empty");
      if (empty) empty.remove();
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = "/questions/" + encodeURIComponent(questionId);
      link.textContent = text.length > 80 ? text.slice(0, 79) + "…" : text;
      item.appendChild(link);
      list.insertBefore(item, list.firstChild);
    }

    form.addEventListener("submit", async function (submit) {
      submit.preventDefault();
      const text = document.getElementById("question").value;
      const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      const button = document.getElementById("ask-button");
      reset();
      setStatus("Looking in the bank… 查找题库", "busy");
      button.disabled = true;
      try {
        const response = await fetch(form.dataset.api, {
          method: "POST",
          credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRFToken": token},
          body: JSON.stringify({question: text}),
        });
        let data = {};
        try { data = await response.json(); } catch (e) { data = {}; }
        if (response.status === 429 && data.refusal === "one_at_a_time") {
          setStatus(data.error, "error");
          reasoningBox.hidden = true;
        } else if (response.status === 429) {
          const wait = response.headers.get("Retry-After") || "15";
          setStatus("Busy: every generation slot is taken. Try again in " + wait + " s. 服务器繁忙，请" + wait + "秒后再试。", "error");
          reasoningBox.hidden = true;
        } else if (!response.ok && response.status !== 202) {
          setStatus(data.error || ("Error " + response.status), "error");
          reasoningBox.hidden = true;
        }
        if (data.id) {
          remember(data.id, text);
        }
        if (!response.ok && response.status !== 202) {
          // already reported above
        } else if (data.status === "generating") {
          follow(data.id, data.stream);
        } else {
          reasoningBox.hidden = true;
          finish(await showAnswer(data.id));
        }
      } catch (e) {
        setStatus("The server did not answer. 服务器没有响应。", "error");
      } finally {
        button.disabled = false;
      }
    });
  } else if (live && live.dataset.stream) {
    follow(live.dataset.question, live.dataset.stream);
  }
})();
