// closeflow operator console: plain JS against the same HTTP API as curl and the CLI.
// No request leaves this origin; the token lives in this tab's sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("closeflow-token") || "", working: new Map(), notes: new Map(), bulk: new Map() };

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, opts = {}) {
  const headers = { Authorization: "Bearer " + state.token };
  if (opts.key) headers["Idempotency-Key"] = opts.key;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  } catch (e) {
    return { status: 0, body: { error: "unreachable", message: "closeflow did not answer: " + e.message } };
  }
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  return { status: resp.status, body };
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = kind || "";
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const abs = (q) => String(q).replace(/^-/, "");
const side = (p) => (String(p.quantity).startsWith("-") ? "short" : "long");
const closeSide = (p) => (side(p) === "short" ? "buy" : "sell");

async function load() {
  const params = new URLSearchParams();
  if ($("account").value.trim()) params.set("account_id", $("account").value.trim());
  if ($("status").value) params.set("status", $("status").value);
  params.set("limit", "100");
  const all = [];
  for (let page = 0; page < 10; page++) {
    const r = await api("GET", "/positions?" + params.toString());
    if (r.status === 401) { say("Sign-in refused: the token is not valid here.", "error"); return signedOut(); }
    if (r.status === 400 && r.body && r.body.error === "account_id_required") {
      say("This token may act on every account: name an account above.", "partial");
      $("positions").replaceChildren();
      return;
    }
    if (r.status !== 200) { say(errorText(r), "error"); return; }
    all.push(...r.body.positions);
    if (!r.body.next_cursor) break;
    params.set("cursor", r.body.next_cursor);
  }
  render(all);
}

function errorText(r) {
  const b = r.body || {};
  return (b.message || "Request failed") + (b.error ? " (" + b.error + ")" : "") + (r.status ? " [" + r.status + "]" : "");
}

function render(positions) {
  const root = $("positions");
  root.replaceChildren();
  if (!positions.length) { root.append(el("p", {}, "No positions.")); return; }
  const byAccount = new Map();
  for (const p of positions) {
    if (!byAccount.has(p.account_id)) byAccount.set(p.account_id, []);
    byAccount.get(p.account_id).push(p);
  }
  for (const [account, list] of byAccount) {
    const section = el("section", { class: "account", "aria-label": "Account " + account }, accountHeader(account, list));
    const bulk = state.bulk.get(account);
    if (bulk) section.append(bulkPanel(account, bulk));
    const groups = new Map();
    for (const p of list) {
      const k = p.strategy_id || "";
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(p);
    }
    for (const [strategy, legs] of groups) section.append(card(strategy, legs));
    root.append(section);
  }
}

// Account-wide actions: close every open position, or liquidate (cancel every order,
// close everything until the broker holds nothing, halt trading).
function accountHeader(account, list) {
  const running = state.bulk.get(account)?.view?.status === "running";
  const open = list.filter((p) => p.status === "open").length;
  const closeAll = el("button", {
    type: "button", class: "primary", "data-close-all": account,
    "aria-label": "Close every open position of account " + account,
    onclick: () => openBulkDialog(account, "close_all", open),
  }, "Close All");
  const liquidate = el("button", {
    type: "button", class: "danger", "data-liquidate": account,
    "aria-label": "Liquidate account " + account,
    onclick: () => openBulkDialog(account, "liquidation", open),
  }, "Liquidate");
  if (running) { closeAll.disabled = true; liquidate.disabled = true; }
  if (!open) closeAll.disabled = true;
  return el("header", {}, el("h2", {}, "Account " + account), closeAll, " ", liquidate);
}

// A bulk close of the account as it stands: a progress bar of its rows, a liquidation's
// phase, and once ended the totals and every failed row's reason.
function bulkPanel(account, bulk) {
  const v = bulk.view;
  const kind = bulk.kind === "liquidation" ? "Liquidation" : "Close all";
  const panel = el("div", { class: "bulk", "data-bulk": account, role: "status", "aria-live": "polite" });
  if (!v) { panel.append(el("p", {}, kind + ": starting...")); return panel; }
  const done = v.succeeded + v.failed + v.skipped;
  const phase = v.liquidation ? " Phase " + v.liquidation.phase + " (attempt " + v.liquidation.attempt + " of " + v.liquidation.max_attempts + ")." : "";
  panel.append(
    el("p", {}, kind + " " + v.status.replace(/_/g, " ") + ": " + done + "/" + v.total + " done; " + v.succeeded + " closed, " + v.failed + " failed, " + v.skipped + " skipped, " + v.pending + " working." + phase),
    el("progress", { max: String(Math.max(v.total, 1)), value: String(done), "aria-label": kind + " progress" }));
  if (v.status !== "running") {
    const pnl = v.total_realized_pnl ?? ("unknown (" + (v.realized_pnl_unknown ?? "—") + ")");
    panel.append(el("p", {}, "Realized PnL: " + pnl + "."));
    if (v.liquidation && v.liquidation.flat === false) {
      panel.append(el("p", { class: "error" }, "NOT FLAT: the broker still holds " + v.liquidation.left.join(", ") + "."));
    } else if (v.liquidation && v.liquidation.flat) {
      panel.append(el("p", { class: "note ok" }, "Flat: the broker holds nothing. Trading is halted."));
    }
    const failed = v.rows.filter((r) => r.status === "failed");
    if (failed.length) {
      panel.append(el("ul", {}, ...failed.map((r) => el("li", {}, r.symbol + " (" + r.position_id + "): " + (r.message || r.error)))));
      if (!v.liquidation) {
        panel.append(el("button", {
          type: "button", "data-retry-failed": account,
          onclick: () => retryFailed(account, v.bulk_close_id),
        }, "Retry failed"));
      }
    }
  }
  if (bulk.error) panel.append(el("p", { class: "error", role: "alert" }, bulk.error));
  return panel;
}

let pendingBulk = null;

function openBulkDialog(account, kind, open) {
  pendingBulk = { account, kind };
  const liquidation = kind === "liquidation";
  $("bulk-title").textContent = liquidation ? "Liquidate account " + account : "Close all of account " + account;
  $("bulk-text").textContent = liquidation
    ? "Cancel every open order of account " + account + ", close every position at market (shorts first) until the broker holds nothing, then halt its trading?"
    : "Close every open position of account " + account + " at market (" + open + " open shown here)?";
  const phrase = "LIQUIDATE " + account;
  $("bulk-phrase-row").hidden = !liquidation;
  $("bulk-phrase-want").textContent = phrase;
  $("bulk-phrase").value = "";
  $("bulk-error").textContent = "";
  $("bulk-ok").textContent = liquidation ? "Liquidate" : "Close All";
  $("bulk-ok").disabled = liquidation;
  $("bulk-confirm").showModal();
  $("bulk-cancel").focus();
}

async function confirmBulk(ev) {
  ev.preventDefault();
  const { account, kind } = pendingBulk;
  const liquidation = kind === "liquidation";
  $("bulk-ok").disabled = true;
  const path = "/accounts/" + encodeURIComponent(account) + (liquidation ? "/liquidate" : "/close-all");
  const body = liquidation ? { confirm: $("bulk-phrase").value.trim() } : {};
  const r = await api("POST", path, { key: newKey(), body });
  if (r.status !== 202 && r.status !== 200) {
    $("bulk-error").textContent = errorText(r);
    $("bulk-ok").disabled = liquidation && $("bulk-phrase").value.trim() !== "LIQUIDATE " + account;
    return;
  }
  $("bulk-confirm").close();
  followBulk(account, kind, r.body);
}

async function retryFailed(account, id) {
  const r = await api("POST", "/bulk-closes/" + encodeURIComponent(id) + "/retry-failed");
  if (r.status !== 202 && r.status !== 200) {
    state.bulk.get(account).error = errorText(r);
    return load();
  }
  followBulk(account, "close_all", r.body);
}

async function followBulk(account, kind, first) {
  const bulk = { kind, view: first, error: null };
  state.bulk.set(account, bulk);
  await load();
  for (;;) {
    if (bulk.view.status !== "running") break;
    await new Promise((ok) => setTimeout(ok, 500));
    const r = await api("GET", "/bulk-closes/" + encodeURIComponent(first.bulk_close_id));
    if (r.status !== 200) { bulk.error = errorText(r); break; }
    bulk.view = r.body;
    await load();
  }
  await load();
}

function card(strategy, legs) {
  const title = strategy ? "Strategy " + strategy : "Positions without a strategy";
  const header = el("header", {}, el("h3", {}, title));
  if (strategy) {
    const working = state.working.get("strategy:" + strategy);
    const all = el("button", {
      type: "button", class: "primary", "data-close-strategy": strategy,
      "aria-label": "Close every leg of strategy " + strategy,
      onclick: () => openStrategyDialog(strategy, legs),
    }, working ? "Closing..." : "Close Strategy");
    // Only a strategy whose every leg is open can close as a whole (else 409).
    if (working || legs.some((l) => l.status !== "open")) all.disabled = true;
    const note = state.notes.get("strategy:" + strategy);
    header.append(all, note ? el("p", { class: "note " + note.kind, role: "status" }, note.text) : null);
  }
  const c = el("article", { class: "card", "aria-label": title, "data-strategy": strategy || "" }, header);
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["Symbol", "Side", "Quantity", "Entry", "Status", "Realized PnL", ""].map((h) => el("th", { scope: "col" }, h)))));
  const body = el("tbody");
  for (const p of legs) body.append(row(p, strategy ? legs : null));
  table.append(body);
  c.append(table);
  return c;
}

function row(p, legs) {
  const cell = (label, text, cls) => el("td", { "data-label": label, class: cls }, text);
  const working = state.working.get(p.position_id);
  const button = el("button", {
    type: "button", class: "primary", "data-position": p.position_id,
    "aria-label": (legs ? "Close leg " : "Close ") + p.symbol + " (" + p.position_id + ")",
    onclick: () => openDialog(p, legs),
  }, working ? "Closing..." : (legs ? "Close Leg" : "Close"));
  if (working || p.status !== "open") button.disabled = true;
  const note = state.notes.get(p.position_id);
  const history = el("button", {
    type: "button", "data-history": p.position_id,
    "aria-label": "History of " + p.symbol + " (" + p.position_id + ")",
    onclick: () => openHistory(p),
  }, "History");
  const actions = el("td", { "data-label": "" }, button, " ", history,
    note ? el("p", { class: "note " + note.kind, role: "status" }, note.text) : null);
  return el("tr", { "data-position": p.position_id },
    cell("Symbol", p.symbol), cell("Side", side(p)), cell("Quantity", abs(p.quantity), "num"),
    cell("Entry", p.avg_entry_price ?? "—", "num"),
    cell("Status", p.status, "status-" + p.status),
    cell("Realized PnL", p.realized_pnl ?? ("unknown (" + (p.realized_pnl_unknown ?? "—") + ")"), "num"), actions);
}

// The position's audit trail: every change, who made it and why, oldest first.
async function openHistory(p) {
  $("history-title").textContent = "History of " + p.symbol + " (" + p.position_id + ")";
  const body = $("history-body");
  body.replaceChildren(el("p", {}, "Loading..."));
  $("history").showModal();
  $("history-close").focus();
  const base = "/positions/" + encodeURIComponent(p.position_id) + "/audit?limit=500";
  const entries = [];
  let path = base;
  for (let page = 0; page < 20; page++) {
    const r = await api("GET", path);
    if (r.status !== 200) { body.replaceChildren(el("p", { class: "error", role: "alert" }, errorText(r))); return; }
    entries.push(...r.body.entries);
    if (!r.body.next_cursor) break;
    path = base + "&cursor=" + encodeURIComponent(r.body.next_cursor);
  }
  const status = (e) => (e.status_before ? e.status_before + " → " : "") + (e.status_after || "");
  const details = (e) => Object.entries(e.details || {}).map(([k, v]) => k + "=" + v).join(" ");
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["When", "Who", "What", "Status", "Why", "Details"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...entries.map((e) => el("tr", {},
      el("td", { "data-label": "When" }, e.at), el("td", { "data-label": "Who" }, e.actor),
      el("td", { "data-label": "What" }, e.action), el("td", { "data-label": "Status" }, status(e)),
      el("td", { "data-label": "Why" }, e.reason || ""), el("td", { "data-label": "Details", class: "details" }, details(e))))));
  body.replaceChildren(entries.length ? table : el("p", {}, "No changes recorded yet."));
}

let pending = null;

function openStrategyDialog(strategy, legs) {
  pending = { strategy, legs };
  $("confirm-title").textContent = "Close strategy";
  openConfirm(null, "Close All");
}

function openDialog(p, legs) {
  pending = { position: p, legs };
  $("confirm-title").textContent = legs ? "Close leg" : "Close position";
  openConfirm(nakedShorts(p, legs), "Close");
}

function openConfirm(warning, okText) {
  $("confirm-error").textContent = "";
  document.querySelector('input[name="order_type"][value="market"]').checked = true;
  $("limit-price").value = "";
  $("limit-price").disabled = true;
  describeOrder();
  $("confirm-ok").textContent = okText;
  $("confirm-warning").hidden = !warning;
  $("confirm-warning").textContent = warning || "";
  $("confirm-ok").disabled = false;
  $("confirm").showModal();
  $("confirm-cancel").focus();
}

function describeOrder() {
  const limit = document.querySelector('input[name="order_type"]:checked').value === "limit";
  if (pending.strategy) {
    const n = pending.legs.length;
    const how = limit ? "a net limit price" + ($("limit-price").value ? " of " + $("limit-price").value : "") : "market";
    $("confirm-text").textContent = "Close all " + n + " legs of strategy " + pending.strategy + "? This closes every leg at " + how + ", all legs or none.";
    return;
  }
  const p = pending.position;
  const how = limit ? "a " + closeSide(p) + " limit order" + ($("limit-price").value ? " at " + $("limit-price").value : "") : "a " + closeSide(p) + " market order";
  $("confirm-text").textContent = "Close " + abs(p.quantity) + " " + p.symbol + " (" + p.position_id + ")? This submits " + how + ".";
}

// Closing one leg alone must not leave a short leg of the same strategy without its hedge.
function nakedShorts(p, legs) {
  if (!legs) return null;
  const shorts = legs.filter((l) => l.position_id !== p.position_id && side(l) === "short" && l.status === "open");
  if (!shorts.length || side(p) === "short") return null;
  return "This leaves the short leg" + (shorts.length > 1 ? "s " : " ") + shorts.map((l) => l.symbol).sort().join(", ") + " of the strategy open without this hedge.";
}

async function confirmClose(ev) {
  ev.preventDefault();
  const body = {};
  if (document.querySelector('input[name="order_type"]:checked').value === "limit") {
    const price = $("limit-price").value.trim();
    if (!price) { $("confirm-error").textContent = "A limit order needs a price."; return; }
    body.order_type = "limit";
    body.limit_price = price;
  }
  $("confirm-ok").disabled = true;
  if (pending.strategy) return confirmStrategyClose(pending.strategy, body);
  const p = pending.position;
  const r = await api("POST", "/positions/" + encodeURIComponent(p.position_id) + "/close", { key: newKey(), body });
  if (r.status !== 201 && r.status !== 200) {
    $("confirm-error").textContent = errorText(r);
    $("confirm-ok").disabled = false;
    return;
  }
  $("confirm").close();
  state.working.set(p.position_id, r.body.close_request_id);
  state.notes.delete(p.position_id);
  await load();
  follow(p, r.body.close_request_id, r.body.poll_interval_ms || 1000);
}

async function confirmStrategyClose(strategy, body) {
  const r = await api("POST", "/strategies/" + encodeURIComponent(strategy) + "/close", { key: newKey(), body });
  if (r.status !== 201 && r.status !== 200) {
    $("confirm-error").textContent = errorText(r);
    $("confirm-ok").disabled = false;
    return;
  }
  $("confirm").close();
  const key = "strategy:" + strategy;
  state.working.set(key, r.body.strategy_close_id);
  state.notes.delete(key);
  await load();
  for (;;) {
    await new Promise((ok) => setTimeout(ok, 500));
    const s = await api("GET", "/strategy-closes/" + encodeURIComponent(r.body.strategy_close_id));
    if (s.status !== 200) { state.notes.set(key, { kind: "error", text: errorText(s) }); break; }
    if (s.body.status === "pending") continue;
    const failed = s.body.legs.filter((l) => l.error_message).map((l) => l.symbol + ": " + l.error_message);
    const counts = s.body.closed_legs + "/" + s.body.total_legs + " legs";
    const note = s.body.status === "success" ? { kind: "ok", text: "Closed: " + counts + "." }
      : s.body.status === "partial" ? { kind: "partial", text: "Partially closed: " + counts + ". " + failed.join("; ") }
      : { kind: "error", text: "Close failed: " + (failed.join("; ") || "no leg closed") };
    state.notes.set(key, note);
    break;
  }
  state.working.delete(key);
  await load();
}

async function follow(p, id, every) {
  for (;;) {
    await new Promise((ok) => setTimeout(ok, Math.min(Math.max(every, 200), 2000)));
    const r = await api("GET", "/close-requests/" + encodeURIComponent(id));
    if (r.status !== 200) { state.notes.set(p.position_id, { kind: "error", text: errorText(r) }); break; }
    const cr = r.body;
    if (cr.status === "completed" || cr.status === "failed") {
      const filled = Number(cr.filled_qty);
      let note;
      if (cr.status === "completed" && cr.filled_qty === cr.target_qty) note = { kind: "ok", text: "Closed: " + cr.filled_qty + " " + p.symbol + " filled." };
      else if (filled > 0) note = { kind: "partial", text: "Partially closed: " + cr.filled_qty + " of " + cr.target_qty + " filled." + (cr.failure_reason ? " " + cr.failure_reason : "") };
      else note = { kind: "error", text: "Close failed: " + (cr.failure_reason || "nothing filled") };
      state.notes.set(p.position_id, note);
      break;
    }
  }
  state.working.delete(p.position_id);
  await load();
}

function signedIn() {
  $("token").value = "";
  $("token").hidden = true;
  $("signin-button").hidden = true;
  document.querySelector('label[for="token"]').hidden = true;
  $("signout").hidden = false;
  $("filters").hidden = false;
}

function signedOut() {
  state.token = "";
  sessionStorage.removeItem("closeflow-token");
  $("token").hidden = false;
  $("signin-button").hidden = false;
  document.querySelector('label[for="token"]').hidden = false;
  $("signout").hidden = true;
  $("filters").hidden = true;
  $("positions").replaceChildren();
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("closeflow-token", state.token);
  signedIn();
  say("");
  await load();
});
$("signout").addEventListener("click", () => { signedOut(); say("Signed out."); });
$("refresh").addEventListener("click", load);
$("status").addEventListener("change", load);
$("account").addEventListener("change", load);
$("confirm-form").addEventListener("submit", confirmClose);
$("confirm-cancel").addEventListener("click", () => $("confirm").close());
$("history-close").addEventListener("click", () => $("history").close());
$("bulk-form").addEventListener("submit", confirmBulk);
$("bulk-cancel").addEventListener("click", () => $("bulk-confirm").close());
$("bulk-phrase").addEventListener("input", () => {
  $("bulk-ok").disabled = $("bulk-phrase").value.trim() !== "LIQUIDATE " + pendingBulk.account;
});
$("limit-price").addEventListener("input", describeOrder);
for (const r of document.querySelectorAll('input[name="order_type"]')) {
  r.addEventListener("change", () => {
    $("limit-price").disabled = r.value !== "limit" || !r.checked;
    if (r.value === "limit" && r.checked) $("limit-price").focus();
    describeOrder();
  });
}
if (state.token) { signedIn(); load(); }
