// A run's page: while the run is active, poll its JSON every 2 s and update the figures (no inline
// script: the site's Content-Security-Policy allows scripts from 'self' only).
(function () {
  const box = document.getElementById("run-figures");
  const url = box && box.dataset.progress;
  if (!url) return;
  function get(obj, path) { return path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj); }
  async function poll() {
    try {
      const r = await fetch(url, {headers: {"Accept": "application/json"}});
      if (!r.ok) return;
      const f = await r.json();
      document.querySelectorAll("#run-figures [data-k]").forEach(el => {
        const v = get(f, el.dataset.k); el.textContent = v == null ? "—" : v;
      });
      const bar = document.getElementById("run-bar"); bar.max = f.total; bar.value = f.finished;
      const st = document.getElementById("run-status");
      // The status in both languages, as the page wrote it (data-w-<status> on the tag).
      const word = st.dataset["w" + f.status.charAt(0).toUpperCase() + f.status.slice(1)];
      st.textContent = word || f.status; st.className = "tag tag-" + f.status;
      if (["queued", "running", "cancelling"].includes(f.status)) setTimeout(poll, 2000);
    } catch (e) { setTimeout(poll, 5000); }
  }
  setTimeout(poll, 2000);
})();
