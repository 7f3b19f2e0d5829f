// evalkit blind review page. Every piece of model or prompt text is inserted with textContent:
// model output is untrusted and is shown as text, never interpreted.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    reviewer: null,
    tokens: [],
    answers: {}, // token -> {verdict, ship_a, ship_b, note}
    index: 0,
    pair: null,
    cache: {},
    noteTimer: null,
  };

  function params() {
    return new URLSearchParams(window.location.search);
  }

  // A team session: the reviewer's private link is /r/<token>; the token goes in a header on every
  // API call (never in a cookie, so another site cannot make the browser send it)
  const link = /^\/r\/([A-Za-z0-9_-]+)$/.exec(window.location.pathname);
  const linkToken = link ? link[1] : null;

  async function api(path, body) {
    const headers = {};
    if (linkToken) headers["X-Review-Token"] = linkToken;
    const opts = body === undefined ? { headers: headers } : {
      method: "POST",
      headers: Object.assign(headers, { "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      keepalive: true,
    };
    const res = await fetch(path, opts);
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
  }

  function answer(token) {
    if (!state.answers[token]) state.answers[token] = { verdict: null, ship_a: null, ship_b: null, note: "" };
    return state.answers[token];
  }

  function doneCount() {
    return state.tokens.filter((t) => state.answers[t] && state.answers[t].verdict).length;
  }

  function renderProgress() {
    const n = state.tokens.length;
    const done = doneCount();
    $("bar").style.width = (n ? (100 * done) / n : 0) + "%";
    $("progress").setAttribute("aria-valuemax", String(n));
    $("progress").setAttribute("aria-valuenow", String(done));
    $("progress-text").textContent = done + " / " + n + " reviewed";
    $("done").hidden = !(n && done === n);
  }

  function shipLabel(side, value) {
    const s = side.toUpperCase();
    if (value === true) return s + " would ship ✓ (" + side + ")";
    if (value === false) return s + " would NOT ship ✗ (" + side + ")";
    return s + " would ship? (" + side + ")";
  }

  function renderAnswer() {
    const token = state.tokens[state.index];
    const a = answer(token);
    document.querySelectorAll("[data-verdict]").forEach((b) => {
      const on = b.dataset.verdict === a.verdict;
      b.classList.toggle("chosen", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    for (const side of ["a", "b"]) {
      const el = $("ship-" + side);
      const v = a["ship_" + side];
      el.textContent = shipLabel(side, v);
      el.dataset.value = v === null ? "unanswered" : v ? "yes" : "no";
    }
    if (document.activeElement !== $("note")) $("note").value = a.note || "";
    renderProgress();
  }

  function renderPair(p) {
    const box = $("messages");
    box.replaceChildren();
    for (const m of p.messages) {
      const div = document.createElement("div");
      div.className = "message role-" + (m.role === "system" || m.role === "assistant" ? m.role : "user");
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = m.role;
      const text = document.createElement("pre");
      text.textContent = m.content;
      div.append(role, text);
      box.append(div);
    }
    $("reference").textContent = p.reference === null ? "(no reference for this item)" : p.reference;
    $("reference-box").hidden = true;
    $("ref-toggle").firstChild.textContent = "Show reference ";
    $("output-a").textContent = p.output_a;
    $("output-b").textContent = p.output_b;
    $("position").textContent = "Pair " + (state.index + 1) + " of " + state.tokens.length;
    $("prev").disabled = state.index === 0;
    $("next").disabled = state.index === state.tokens.length - 1;
    renderAnswer();
  }

  async function load(token) {
    if (!state.cache[token]) state.cache[token] = await api("/api/pair/" + encodeURIComponent(token));
    return state.cache[token];
  }

  let navigation = 0;
  async function go(index) {
    if (index < 0 || index >= state.tokens.length) return;
    flushNote();
    const ticket = ++navigation;
    const token = state.tokens[index];
    try {
      const p = await load(token);
      if (ticket !== navigation) return; // a later move won
      // the index changes only when the pair is on screen, so a key pressed meanwhile
      // answers the pair the reviewer is looking at
      state.index = index;
      state.pair = p;
      renderPair(p);
      window.scrollTo(0, 0);
      const next = state.tokens[index + 1];
      if (next) load(next).catch(() => {});
    } catch (e) {
      showError("Could not load pair: " + e.message);
    }
  }

  let saveChain = Promise.resolve();
  let inFlight = 0;
  let lastFailed = false;
  function pending(delta) {
    inFlight += delta;
    document.body.dataset.saving = inFlight > 0 ? "yes" : "no";
    $("saved").textContent = inFlight > 0 ? "saving…" : lastFailed ? "last answer NOT saved" : "all answers saved";
  }
  function save(token) {
    const a = answer(token);
    const body = { token: token, reviewer: state.reviewer, verdict: a.verdict, ship_a: a.ship_a, ship_b: a.ship_b, note: a.note || "" };
    pending(+1);
    // one request at a time, in order, so a later answer never loses to an earlier one
    saveChain = saveChain.then(async () => {
      try {
        for (let attempt = 0; attempt < 5; attempt++) {
          try {
            await api("/api/verdict", body);
            lastFailed = false;
            showError("");
            return;
          } catch (e) {
            $("saved").textContent = "not saved yet, retrying…";
            await new Promise((r) => setTimeout(r, 300 * (attempt + 1)));
          }
        }
        lastFailed = true;
        showError("Could not save your last answer. Is `evalkit review serve` still running?");
      } finally {
        pending(-1);
      }
    });
    return saveChain;
  }

  function setVerdict(v) {
    const token = state.tokens[state.index];
    const a = answer(token);
    a.verdict = v;
    // unanswered "would ship" takes the obvious default; the reviewer flips it with a / b
    const fill = v !== "both_bad";
    if (a.ship_a === null) a.ship_a = fill;
    if (a.ship_b === null) a.ship_b = fill;
    renderAnswer();
    save(token);
    // one key per pair: the verdict (pressed last, after any a / b / note) moves on to the next
    // unanswered pair; k goes back to change an answer. The "Move on after a verdict" box turns it off.
    if ($("auto-advance").checked) {
      const next = nextUnanswered(state.index);
      if (next !== null) go(next);
    }
  }

  function nextUnanswered(from) {
    const n = state.tokens.length;
    for (let step = 1; step < n; step++) {
      const i = (from + step) % n;
      const a = state.answers[state.tokens[i]];
      if (!(a && a.verdict)) return i;
    }
    return null;
  }

  function toggleShip(side) {
    const token = state.tokens[state.index];
    const a = answer(token);
    const key = "ship_" + side;
    a[key] = a[key] === null ? false : !a[key];
    renderAnswer();
    save(token);
  }

  function flushNote() {
    if (state.noteTimer === null) return;
    clearTimeout(state.noteTimer);
    state.noteTimer = null;
    save(state.tokens[state.index]);
  }

  function onNoteInput() {
    answer(state.tokens[state.index]).note = $("note").value;
    if (state.noteTimer !== null) clearTimeout(state.noteTimer);
    state.noteTimer = setTimeout(flushNote, 400);
  }

  function toggleReference() {
    const box = $("reference-box");
    box.hidden = !box.hidden;
    $("ref-toggle").firstChild.textContent = box.hidden ? "Show reference " : "Hide reference ";
  }

  const KEYS = { "1": "a", "2": "b", "3": "tie", "4": "both_bad" };
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT")) {
      if (e.key === "Escape") t.blur();
      return;
    }
    if ($("pair").hidden) return;
    if (KEYS[e.key]) setVerdict(KEYS[e.key]);
    else if (e.key === "a" || e.key === "b") toggleShip(e.key);
    else if (e.key === "j" || e.key === "ArrowRight") go(state.index + 1);
    else if (e.key === "k" || e.key === "ArrowLeft") go(state.index - 1);
    else if (e.key === "r") toggleReference();
    else if (e.key === "n") $("note").focus();
    else return;
    e.preventDefault();
  }

  async function start(reviewer) {
    state.reviewer = reviewer;
    $("reviewer-label").textContent = "Reviewer: " + reviewer;
    const s = await api("/api/session?reviewer=" + encodeURIComponent(reviewer));
    state.tokens = s.tokens;
    state.answers = s.answers || {};
    $("name-form").hidden = true;
    $("pair").hidden = false;
    let first = state.tokens.findIndex((t) => !(state.answers[t] && state.answers[t].verdict));
    if (first < 0) first = state.tokens.length - 1;
    await go(first);
    document.body.dataset.ready = "true";
  }

  async function init() {
    document.addEventListener("keydown", onKey);
    document.querySelectorAll("[data-verdict]").forEach((b) => b.addEventListener("click", () => setVerdict(b.dataset.verdict)));
    $("ship-a").addEventListener("click", () => toggleShip("a"));
    $("ship-b").addEventListener("click", () => toggleShip("b"));
    $("prev").addEventListener("click", () => go(state.index - 1));
    $("next").addEventListener("click", () => go(state.index + 1));
    $("ref-toggle").addEventListener("click", toggleReference);
    $("note").addEventListener("input", onNoteInput);
    $("note").addEventListener("blur", flushNote);
    const advance = $("auto-advance");
    advance.checked = window.localStorage.getItem("evalkit-review-advance") !== "off";
    advance.addEventListener("change", () => window.localStorage.setItem("evalkit-review-advance", advance.checked ? "on" : "off"));
    window.addEventListener("pagehide", flushNote);

    try {
      let reviewer = linkToken ? "" : (params().get("reviewer") || "").trim();
      if (!reviewer) {
        const s = await api("/api/session");
        reviewer = s.reviewer || (linkToken ? "" : window.localStorage.getItem("evalkit-review-name") || "");
      }
      if (reviewer) return await start(reviewer);
      $("name-form").hidden = false;
      $("progress-text").textContent = "";
      $("name-form").addEventListener("submit", (e) => {
        e.preventDefault();
        const name = $("name-input").value.trim();
        if (!name) return;
        window.localStorage.setItem("evalkit-review-name", name);
        start(name).catch((err) => showError(err.message));
      });
      $("name-input").focus();
    } catch (e) {
      showError("Could not load the session: " + e.message);
    }
  }

  init();
})();
