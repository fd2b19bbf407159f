// Threadline inbox: plain JS over the agent API (/api/v1), no build step.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var TOKEN_KEY = "threadline.inbox.token";
  var NOTIFY_KEY = "threadline.inbox.notify";
  // The channels whose bridges send a reply's files (the node refuses files elsewhere).
  var FILE_CHANNELS = ["webchat", "email", "whatsapp", "messenger", "instagram", "xmpp", "matrix", "telegram", "slack"];
  var CHANNEL_NAMES = { whatsapp: "WhatsApp", messenger: "Messenger", instagram: "Instagram",
    email: "email", webchat: "the web chat", sms: "SMS", telegram: "Telegram", slack: "Slack",
    matrix: "Matrix", xmpp: "XMPP" };
  var state = { token: null, me: null, agents: {}, revoked: {}, filter: "open", channel: "",
    label: "", team: "", teams: {}, teamCounts: {}, threads: [],
    // What the search box asks for ("" when not searching), and a found message to open at.
    search: "", focus: null, marked: null,
    selected: null, detail: null, contact: null, mode: "reply",
    // The customer's message the next reply answers (quoted where the app can), if chosen.
    replyTo: null,
    // The mails whose quoted history the agent unfolded; kept across re-renders of the thread.
    unfolded: {} };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  function api(method, path, body) {
    var init = { method: method, headers: { Authorization: "Bearer " + state.token } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/api/v1" + path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) {
          var error = new Error((json.error && json.error.message) || response.statusText);
          error.status = response.status;
          throw error;
        }
        return json;
      });
    });
  }

  // ---- sign in ----
  function showSignIn(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  function signIn(token) {
    state.token = token;
    return api("GET", "/me").then(function (me) {
      state.me = me;
      localStorage.setItem(TOKEN_KEY, token);
      $("me-name").textContent = me.name;
      $("signin").hidden = true;
      $("app").hidden = false;
      $("agents-open").hidden = me.role !== "admin";
      $("reports-open").hidden = me.role !== "admin";
      return api("GET", "/agents").then(function (list) {
        list.agents.forEach(function (a) { state.agents[a.id] = a.name; state.revoked[a.id] = a.revoked; });
        loadThreads();
        listen();
        checkNewMessages();
        loadCanned();
        loadTeams();
      });
    }).catch(function (error) {
      localStorage.removeItem(TOKEN_KEY);
      showSignIn(error.status === 401 ? "That token is not valid." : error.message);
    });
  }

  $("signin-form").addEventListener("submit", function (e) {
    e.preventDefault();
    signIn($("token").value.trim());
  });
  $("signout").addEventListener("click", function () {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  // ---- thread list ----
  var TITLES = { mine: "Mine", unassigned: "Unassigned", open: "Open", pending: "Pending",
    snoozed: "Snoozed", resolved: "Resolved", all: "All" };

  function listQuery() {
    var q = filterParams();
    q.push("limit=200");
    return "?" + q.join("&");
  }

  // The filters chosen on the left, as query parameters (the list and search share them).
  function filterParams() {
    var q = [];
    if (state.filter === "mine") q.push("assignee=" + state.me.id);
    else if (state.filter === "unassigned") q.push("assignee=none", "status=open");
    else if (state.filter !== "all") q.push("status=" + state.filter);
    if (state.channel) q.push("channel=" + state.channel);
    if (state.team) q.push("team=" + encodeURIComponent(state.team));
    if (state.label) q.push("label=" + encodeURIComponent(state.label));
    return q;
  }

  var SLA_NAMES = { first_response: "first response", next_response: "next response", resolution: "resolution" };

  // A span of time, roughly: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
    return Math.floor(h / 24) + " d" + (h % 24 ? " " + (h % 24) + " h" : "");
  }

  function ago(ms) {
    var s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return "now";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h";
    return new Date(ms).toLocaleDateString();
  }

  // Web chat visitors' handles are derived ids: show them as "Web visitor 5c60a2".
  function pretty(handle) {
    if (!handle) return handle;
    var visitor = /^webchat:v-([0-9a-f]{6})/.exec(handle);
    return visitor ? "Web visitor " + visitor[1] : handle;
  }

  function who(thread) {
    return thread.contact_name || pretty(thread.route && thread.route.handle) || ("Contact " + thread.contact.slice(0, 8));
  }

  function loadThreads() {
    loadCounts();
    if (state.search) runSearch(false);
    return api("GET", "/threads" + listQuery()).then(function (page) {
      state.threads = page.threads;
      renderThreads();
    }).catch(function (error) { if (error.status === 401) showSignIn("Signed out."); });
  }

  // How many conversations each filter holds (with the channel and label chosen).
  function loadCounts() {
    var q = [];
    if (state.channel) q.push("channel=" + state.channel);
    if (state.label) q.push("label=" + encodeURIComponent(state.label));
    api("GET", "/threads/counts" + (q.length ? "?" + q.join("&") : "")).then(function (counts) {
      document.querySelectorAll("[data-filter]").forEach(function (button) {
        var count = button.querySelector(".count");
        if (!count) { count = el("span", "count"); button.appendChild(count); }
        var n = counts[button.dataset.filter];
        count.textContent = n > 0 ? String(n) : "";
        // Of those, the ones with customers' messages this agent has not read.
        var unread = button.querySelector(".unread-count");
        if (!unread) { unread = el("span", "unread-count"); button.appendChild(unread); }
        var u = counts.unread[button.dataset.filter];
        unread.textContent = u > 0 ? String(u) : "";
        unread.title = u > 0 ? u + (u === 1 ? " conversation" : " conversations") + " with messages you have not read" : "";
      });
      // Each team's open conversations, in the team picker.
      state.teamCounts = counts.teams || {};
      document.querySelectorAll("#team-filter option[value]").forEach(function (option) {
        if (!option.value) return;
        var c = state.teamCounts[option.value];
        option.textContent = option.value + (c && c.open ? " (" + c.open + " open" + (c.unread ? ", " + c.unread + " unread" : "") + ")" : "");
      });
    }).catch(function () { /* the next change asks again */ });
  }

  // A revoked agent's assignment stays until someone takes the thread over: say so.
  function assigneeName(thread) {
    var name = state.agents[thread.assignee] || "assigned";
    return thread.assignee_revoked ? name + " (revoked)" : name;
  }

  function renderThreads() {
    var list = $("thread-list");
    list.textContent = "";
    state.threads.forEach(function (thread) {
      var item = el("li", "thread-item");
      item.dataset.thread = thread.id;
      if (thread.id === state.selected) item.classList.add("selected");
      item.appendChild(el("span", "who", who(thread)));
      item.appendChild(el("span", "when", ago(thread.last_activity)));
      var what = (thread.route ? thread.route.channel : thread.opened_on) + " · " + thread.status;
      if (thread.assignee) what += " · " + assigneeName(thread);
      if (thread.team) what += " · team " + thread.team;
      item.appendChild(el("span", "what", what));
      // Unread for this agent, from its read marks on the node (the same on every device).
      if (thread.unread > 0 && thread.id !== state.selected) item.appendChild(el("span", "badge", String(thread.unread)));
      // How long the customer has waited for an answer, overdue past the org's target.
      if (thread.waiting_since && thread.status === "open") {
        var overdue = !!thread.reply_due && Date.now() > thread.reply_due;
        var waited = Math.max(0, Date.now() - thread.waiting_since) / 60000;
        var span = waited < 60 ? Math.floor(waited) + " min" : Math.floor(waited / 60) + " h " + Math.floor(waited % 60) + " min";
        var waiting = el("span", "waiting" + (overdue ? " overdue" : ""), (overdue ? "Overdue: " : "Waiting ") + span);
        waiting.title = "The customer's first message since the last reply came " + new Date(thread.waiting_since).toLocaleString() +
          (thread.reply_due ? "; an answer was due by " + new Date(thread.reply_due).toLocaleString() : "");
        item.appendChild(waiting);
      }
      // Service level targets ([sla]): the ones missed, else the next one due.
      var sla = thread.sla;
      if (sla && sla.breached.length) {
        item.appendChild(el("span", "sla breached", "Missed: " + sla.breached.map(function (b) { return SLA_NAMES[b]; }).join(", ")));
      } else if (sla) {
        var dues = ["first_response", "next_response", "resolution"].filter(function (k) { return sla[k + "_due"]; })
          .sort(function (a, b) { return sla[a + "_due"] - sla[b + "_due"]; });
        if (dues.length) {
          var due = sla[dues[0] + "_due"];
          var mark = el("span", "sla", SLA_NAMES[dues[0]] + " due in " + duration(due - Date.now()));
          mark.title = SLA_NAMES[dues[0]] + " due " + new Date(due).toLocaleString();
          item.appendChild(mark);
        }
      }
      // The last message, either way: who wrote it, and its first words.
      var last = thread.last_message;
      if (last) {
        var by = last.direction === "inbound" ? "" : (last.agent === state.me.id ? "You: " : ((state.agents[last.agent] || "Agent") + ": "));
        item.appendChild(el("span", "preview" + (last.text == null ? " erased" : ""), by + (last.text == null ? "(erased)" : last.text)));
      }
      item.addEventListener("click", function () { select(thread.id); });
      list.appendChild(item);
    });
    $("list-empty").hidden = !!state.search || state.threads.length > 0;
    if (!state.search) $("list-title").textContent = TITLES[state.filter] + (state.label ? " · " + state.label : "");
    // Unread messages in the list, in the tab's title too (seen from another tab).
    var unread = state.threads.reduce(function (n, t) { return n + (t.unread || 0); }, 0);
    document.title = (unread > 0 ? "(" + unread + ") " : "") + "Threadline inbox";
  }

  document.querySelectorAll("[data-filter]").forEach(function (button) {
    button.addEventListener("click", function () {
      document.querySelectorAll("[data-filter]").forEach(function (b) { b.classList.remove("active"); });
      button.classList.add("active");
      state.filter = button.dataset.filter;
      loadThreads();
    });
  });
  $("channel").addEventListener("change", function () { state.channel = this.value; loadThreads(); });
  function filterByLabel(label) {
    state.label = label.trim();
    $("label-filter").value = state.label;
    loadThreads();
  }
  $("label-filter").addEventListener("change", function () { filterByLabel(this.value); });
  $("team-filter").addEventListener("change", function () {
    state.team = this.value;
    loadThreads();
  });

  // ---- teams: every agent sees them; admins make and change them ----
  function loadTeams() {
    return api("GET", "/teams").then(function (list) {
      state.teams = {};
      list.teams.forEach(function (team) { state.teams[team.name] = team.members; });
      var filter = $("team-filter");
      var chosen = filter.value;
      filter.querySelectorAll("option").forEach(function (option) { if (option.value) option.remove(); });
      list.teams.forEach(function (team) {
        var option = el("option", null, team.name);
        option.value = team.name;
        filter.appendChild(option);
      });
      if (state.teams[chosen]) filter.value = chosen;
      else if (chosen) { filter.value = ""; state.team = ""; loadThreads(); }
      renderTeams(list.teams);
      if (state.detail) renderThread();
    }).catch(function () { /* asked again on the next change */ });
  }
  function renderTeams(teams) {
    var items = $("teams-list");
    items.textContent = "";
    teams.forEach(function (team) {
      var item = el("li");
      item.dataset.team = team.name;
      item.appendChild(el("span", "name", team.name));
      item.appendChild(el("span", "meta", team.members.map(function (id) { return state.agents[id] || id.slice(0, 8); }).join(", ")));
      var change = el("button", "small", "Change");
      change.type = "button";
      change.addEventListener("click", function () { editTeam(team.name, team.members); });
      item.appendChild(change);
      var remove = el("button", "small revoke", "Remove");
      remove.type = "button";
      remove.addEventListener("click", function () {
        $("teams-error").textContent = "";
        api("DELETE", "/teams/" + encodeURIComponent(team.name)).then(loadTeams).catch(function (error) { $("teams-error").textContent = error.message; });
      });
      item.appendChild(remove);
      items.appendChild(item);
    });
  }
  // The team form: a name, and a box for each agent that is not revoked.
  function editTeam(name, members) {
    $("team-name").value = name;
    // Agents of the team this node does not know (another node's) stay in it.
    state.teamKept = members.filter(function (id) { return !(id in state.agents); });
    var boxes = $("team-members");
    boxes.querySelectorAll("label").forEach(function (label) { label.remove(); });
    Object.keys(state.agents).forEach(function (id) {
      if (state.revoked[id]) return;
      var label = el("label");
      var box = el("input");
      box.type = "checkbox";
      box.value = id;
      box.checked = members.indexOf(id) >= 0;
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + state.agents[id]));
      boxes.appendChild(label);
    });
  }
  $("team-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("teams-error").textContent = "";
    var members = [];
    $("team-members").querySelectorAll("input:checked").forEach(function (box) { members.push(box.value); });
    members = members.concat(state.teamKept || []);
    if (!members.length) { $("teams-error").textContent = "Choose at least one agent."; return; }
    api("PUT", "/teams/" + encodeURIComponent($("team-name").value.trim()), { members: members })
      .then(function () { editTeam("", []); return loadTeams(); })
      .catch(function (error) { $("teams-error").textContent = error.message; });
  });

  // ---- one thread ----
  var SYSTEM = {
    "thread.opened": function () { return "Conversation started"; },
    "thread.assign": function (e) { return e.detail.assignee ? "Assigned to " + (state.agents[e.detail.assignee] || e.detail.assignee) : "Unassigned"; },
    "thread.assign_team": function (e) { return e.detail.team ? "Given to team " + e.detail.team : "Taken from its team"; },
    "thread.status": function (e) {
      return "Marked " + e.detail.status + (e.detail.until ? " until " + new Date(e.detail.until).toLocaleString() : "") +
        (!e.agent && e.detail.status === "open" ? " (the snooze ended)" : "");
    },
    "thread.handoff": function (e) { return "Replies now go to " + (pretty(e.handle) || e.detail.channel); },
    "thread.label_add": function (e) { return "Label " + e.detail.label + " added"; },
    "thread.label_remove": function (e) { return "Label " + e.detail.label + " removed"; },
    "thread.auto_reply": function (e) {
      var text = (e.text || "").replace(/\s+/g, " ").trim();
      if (text.length > 200) text = text.slice(0, 200) + "…";
      return "Automatic reply from " + (pretty(e.handle) || e.detail.channel) + (text ? ": " + text : "");
    },
  };

  function select(id) {
    if (state.selected !== id) setReplyTo(null);
    if (state.selected !== id && state.focus === null) state.marked = null;
    state.selected = id;
    $("customer-typing").hidden = true;
    $("no-thread").hidden = true;
    $("thread-view").hidden = false;
    // On a phone the conversation takes the screen; `back` returns to the list.
    $("app").classList.add("reading");
    $("app").classList.remove("contact-open");
    renderThreads();
    return loadThread();
  }
  $("back").addEventListener("click", function () { $("app").classList.remove("reading", "contact-open"); });
  // On a phone the contact panel takes the conversation's place, and gives it back.
  $("show-contact").addEventListener("click", function () { $("app").classList.add("contact-open"); });
  $("contact-back").addEventListener("click", function () { $("app").classList.remove("contact-open"); });

  function loadThread() {
    var id = state.selected;
    return api("GET", "/threads/" + id).then(function (detail) {
      if (id !== state.selected) return;
      state.detail = detail;
      // Tell the customer's side that the conversation has been read, up to the last message.
      var messages = detail.events.filter(function (e) { return e.kind === "thread.message.inbound"; });
      if (messages.length && document.visibilityState === "visible") {
        api("POST", "/threads/" + id + "/read", { up_to: messages[messages.length - 1].id }).catch(function () {});
      }
      renderThread();
      renderThreads();
      return api("GET", "/contacts/" + detail.thread.contact).then(function (record) {
        if (id !== state.selected) return;
        // A code being confirmed is for the contact it was sent for.
        if (!state.contact || state.contact.id !== record.id) $("verify-form").hidden = true;
        state.contact = record;
        renderContact();
      });
    });
  }

  // Whether the message pane shows the newest message: it stays so as messages come and as
  // the pane changes size (a narrower window, a banner above the composer), until the agent
  // scrolls up.
  var pinned = true;
  $("events").addEventListener("scroll", function () {
    var pane = $("events");
    pinned = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  });
  if (window.ResizeObserver) {
    new ResizeObserver(function () {
      if (pinned) $("events").scrollTop = $("events").scrollHeight;
    }).observe($("events"));
  }

  function renderThread() {
    var thread = state.detail.thread;
    $("thread-title").textContent = who(thread);
    var meta = "Started on " + thread.opened_on + " · " + thread.n_messages + (thread.n_messages === 1 ? " message" : " messages");
    if (thread.route) meta += " · replies go to " + thread.route.channel;
    if (thread.assignee) meta += " · assigned to " + assigneeName(thread);
    if (thread.team) meta += " · team " + thread.team;
    $("thread-meta").textContent = meta;
    // Only channels whose bridges send files get them (the node refuses the others).
    var files = !!thread.route && FILE_CHANNELS.indexOf(thread.route.channel) >= 0;
    $("attach-label").hidden = !files;
    if (!files) $("attach").value = "";
    $("status").value = thread.status;
    $("assign-me").textContent = thread.assignee === state.me.id ? "Unassign" : "Assign to me";
    // Any agent of the node (revoked ones only as the current assignee).
    var assignee = $("assignee");
    assignee.textContent = "";
    var none = el("option", null, "Unassigned");
    none.value = "";
    assignee.appendChild(none);
    Object.keys(state.agents).forEach(function (id) {
      if (state.revoked[id] && id !== thread.assignee) return;
      var option = el("option", null, (id === state.me.id ? "Me: " : "") + state.agents[id]);
      option.value = id;
      assignee.appendChild(option);
    });
    assignee.value = thread.assignee || "";
    // The org's teams (a team removed since stays shown while the thread has it).
    var team = $("team");
    team.textContent = "";
    var noTeam = el("option", null, "No team");
    noTeam.value = "";
    team.appendChild(noTeam);
    var names = Object.keys(state.teams);
    if (thread.team && names.indexOf(thread.team) < 0) names.push(thread.team);
    names.sort().forEach(function (name) {
      var option = el("option", null, "Team: " + name);
      option.value = name;
      team.appendChild(option);
    });
    team.value = thread.team || "";
    if (thread.status === "snoozed" && thread.snoozed_until) {
      $("status").querySelector("option[value=snoozed]").textContent =
        "Snoozed until " + new Date(thread.snoozed_until).toLocaleString();
    }
    var labels = $("labels");
    labels.textContent = "";
    thread.labels.forEach(function (label) {
      var chip = el("span", "chip");
      // The label's name filters the list by it.
      var name = el("button", "chip-name", label);
      name.type = "button";
      name.title = "Show the conversations labelled " + label;
      name.addEventListener("click", function () { filterByLabel(label); });
      chip.appendChild(name);
      var remove = el("button", null, "×");
      remove.type = "button";
      remove.setAttribute("aria-label", "Remove label " + label);
      remove.addEventListener("click", function () { act("/labels", { remove: [label] }); });
      chip.appendChild(remove);
      labels.appendChild(chip);
    });
    var receipts = {};
    var failures = {};
    state.detail.events.forEach(function (e) {
      if (e.kind === "thread.receipt") {
        var rank = { failed: 0, delivered: 1, read: 2 };
        var old = receipts[e.detail.target];
        if (!old || rank[e.detail.receipt] > rank[old]) receipts[e.detail.target] = e.detail.receipt;
        if (e.detail.receipt === "failed") failures[e.detail.target] = e.text || "the channel did not say why";
      }
    });
    var byId = {};
    state.detail.events.forEach(function (e) { byId[e.id] = e; });
    var quoting = !!thread.route && thread.route.channel === "whatsapp";
    if (state.replyTo && (!quoting || !byId[state.replyTo.id])) setReplyTo(null);
    var list = $("events");
    // Opened at the newest message; a live update keeps it there, unless the agent scrolled
    // up to read (then the view stays where it is).
    var sameThread = list.dataset.thread === thread.id;
    var kept = list.scrollTop;
    list.textContent = "";
    state.detail.events.forEach(function (e) {
      var item;
      if (e.kind === "thread.message.inbound" || e.kind === "thread.message.outbound" || e.kind === "thread.note") {
        var cls = e.kind === "thread.note" ? "note" : (e.kind === "thread.message.inbound" ? "inbound" : "outbound");
        var unfolded = !!e.display_text && !!state.unfolded[e.id];
        item = el("li", "event " + cls);
        if (e.subject) item.appendChild(el("div", "subject", e.subject));
        if (e.template) item.appendChild(el("div", "template", "Template " + e.template.name + " (" + e.template.language + ")"));
        if (e.reply_to && byId[e.reply_to]) item.appendChild(el("div", "quote", snippet(byId[e.reply_to])));
        var shown = e.template ? e.template.parameters.join(" · ") : (unfolded ? e.text : (e.display_text || e.text));
        var body = el("div", "text", e.erased ? "(erased)" : shown);
        item.appendChild(body);
        if (e.display_text) item.appendChild(quotedToggle(body, e, unfolded));
        var meta = new Date(e.time).toLocaleString();
        if (e.kind === "thread.message.inbound" && e.handle) meta = pretty(e.handle) + " · " + meta;
        if (e.agent) meta = (state.agents[e.agent] || "agent") + " · " + meta;
        else if (e.kind === "thread.message.outbound") meta = "Automatic reply · " + meta;
        if (e.kind === "thread.note") meta = "Note · " + meta;
        if (receipts[e.id]) meta += " · " + receipts[e.id];
        (e.attachments || []).forEach(function (file, n) {
          item.appendChild(fileButton("attachment", file.name + " (" + size(file.size) + ")",
            "/attachments/" + n, file, e));
        });
        // The message exactly as it came (a mail's source), for what the view above cannot show.
        if (e.original) {
          item.appendChild(fileButton("original", "Original message (" + size(e.original.size) + ")",
            "/original", e.original, e));
        }
        item.appendChild(el("div", "meta", meta));
        // Not delivered: why, and the customer's other handles to send it to instead.
        if (e.kind === "thread.message.outbound" && receipts[e.id] === "failed") {
          item.classList.add("failed");
          item.appendChild(el("div", "failure", "Not delivered: " + failures[e.id]));
          offerResend(item, e, thread);
        }
        // WhatsApp quotes the message a reply answers.
        if (e.kind === "thread.message.inbound" && !e.erased && quoting) {
          var answer = el("button", "reply-to", "Reply to this");
          answer.type = "button";
          answer.addEventListener("click", function () { setReplyTo(e); });
          item.appendChild(answer);
        }
      } else if (SYSTEM[e.kind]) {
        item = el("li", "event system", SYSTEM[e.kind](e));
      } else {
        return;
      }
      item.dataset.event = e.id;
      list.appendChild(item);
    });
    list.dataset.thread = thread.id;
    if (!sameThread) pinned = true;
    list.scrollTop = pinned ? list.scrollHeight : kept;
    // Opened from a search result: at that message (once), marked (while it is shown).
    var found = state.marked && list.querySelector('[data-event="' + state.marked + '"]');
    if (found) {
      found.classList.add("found");
      if (state.focus === state.marked) {
        state.focus = null;
        found.scrollIntoView({ block: "center" });
        pinned = false;
      }
    }
    renderWindow();
  }

  function snippet(e) {
    var text = e.erased ? "(erased)" : (e.display_text || e.text || "");
    return text.length > 80 ? text.slice(0, 80) + "…" : text;
  }
  function setReplyTo(e) {
    state.replyTo = e;
    $("replying").hidden = !e;
    $("replying-text").textContent = e ? "Replying to: " + snippet(e) : "";
    if (e) $("compose").focus();
  }
  $("replying-clear").addEventListener("click", function () { setReplyTo(null); });

  // The route's messaging window: when it is closed, why, and the ways that work instead
  // (an approved template on WhatsApp, another of the contact's channels).
  function renderWindow() {
    var thread = state.detail.thread;
    var win = thread.reply_window;
    var optedOut = thread.opted_out && thread.route;
    var box = $("window");
    box.hidden = !win && !optedOut;
    $("template-form").hidden = true;
    $("window-ways").textContent = "";
    updateSend();
    updateSegments();
    if (!win && !optedOut) return;
    var channel = optedOut ? thread.route.channel : win.channel;
    var name = CHANNEL_NAMES[channel] || channel;
    box.classList.toggle("closed", !!optedOut || !win.open);
    if (optedOut) {
      $("window-text").textContent = "The customer opted out of " + name +
        " (they texted STOP): nothing is sent to them there until they text START. Write a note, or reply on another of their channels.";
    } else if (win.open) {
      $("window-text").textContent = "Replies on " + name + " are open until " +
        new Date(win.until).toLocaleString() +
        (win.human_agent ? " (as a human agent's reply, with the HUMAN_AGENT tag)" : "") + ".";
      return;
    } else {
      $("window-text").textContent = "Replies on " + name + " are closed: " + win.reason + ".";
      $("template-form").hidden = win.channel !== "whatsapp";
    }
    var handles = (state.contact && state.contact.id === thread.contact) ? state.contact.handles : [];
    handles.filter(function (h) { return h.split(":")[0] !== channel; }).forEach(function (h) {
      var button = el("button", null, "Reply via " + pretty(h));
      button.type = "button";
      button.dataset.handle = h;
      button.addEventListener("click", function () { act("/handoff", { handle: h }); });
      $("window-ways").appendChild(button);
    });
  }

  // Buttons that send a failed reply's text again through another of the contact's handles
  // (the conversation is handed off to it first).
  function offerResend(item, e, thread) {
    var contact = state.contact && state.contact.id === thread.contact ? state.contact : null;
    var current = thread.route && thread.route.handle;
    if (!contact || e.erased || !e.text) return;
    contact.handles.filter(function (h) { return h !== current; }).forEach(function (h) {
      var button = el("button", "resend", "Send again via " + pretty(h));
      button.type = "button";
      button.dataset.handle = h;
      button.addEventListener("click", function () {
        $("compose-error").textContent = "";
        api("POST", "/threads/" + thread.id + "/handoff", { handle: h })
          .then(function () { return api("POST", "/threads/" + thread.id + "/replies", { text: e.text }); })
          .then(loadThread)
          .catch(function (error) { $("compose-error").textContent = error.message; });
      });
      item.appendChild(button);
    });
  }

  // A reply the window or an opt-out forbids is not offered (a note still is).
  function replyClosed() {
    var thread = state.detail && state.detail.thread;
    if (!thread) return false;
    return !!thread.opted_out || (!!thread.reply_window && !thread.reply_window.open);
  }
  function updateSend() {
    $("send").disabled = sending || (state.mode === "reply" && replyClosed());
  }

  // An SMS reply's segments (each billed) as the agent writes it, counted by the node as the
  // carrier will.
  var segmentsTimer = null;
  function updateSegments() {
    clearTimeout(segmentsTimer);
    var thread = state.detail && state.detail.thread;
    var text = $("compose").value;
    var sms = state.mode === "reply" && thread && thread.route && thread.route.channel === "sms";
    if (!sms || !text.trim()) { $("segments").hidden = true; return; }
    var id = thread.id;
    segmentsTimer = setTimeout(function () {
      api("POST", "/threads/" + id + "/replies/preview", { text: text }).then(function (preview) {
        if (!preview.sms || state.selected !== id) return;
        var n = preview.sms.segments;
        $("segments").textContent = n + (n === 1 ? " SMS segment" : " SMS segments") +
          (preview.sms.messages > 1 ? " in " + preview.sms.messages + " messages" : "") +
          " (" + preview.sms.encoding + ")";
        $("segments").classList.toggle("ucs2", preview.sms.encoding !== "GSM-7");
        $("segments").hidden = false;
      }).catch(function () { $("segments").hidden = true; });
    }, 200);
  }

  $("template-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var values = $("template-values").value.split("\n").map(function (v) { return v.trim(); })
      .filter(function (v) { return v; });
    $("template-error").textContent = "";
    $("template-send").disabled = true;
    api("POST", "/threads/" + state.selected + "/replies", { template: {
      name: $("template-name").value.trim(), language: $("template-language").value.trim(),
      parameters: values } })
      .then(function () {
        $("template-values").value = "";
        return loadThread().catch(function () { /* the live stream will refresh it */ });
      })
      .catch(function (error) { $("template-error").textContent = error.message; })
      .then(function () { $("template-send").disabled = false; });
  });

  // A mail shows its new text; the quoted history below it is kept and one click away.
  function quotedToggle(body, e, unfolded) {
    var button = el("button", "quoted");
    button.type = "button";
    function show(open) {
      body.textContent = open ? e.text : e.display_text;
      button.dataset.open = open ? "1" : "";
      button.textContent = open ? "hide quoted text" : "… show quoted text";
      if (open) state.unfolded[e.id] = true; else delete state.unfolded[e.id];
    }
    show(unfolded);
    button.addEventListener("click", function () { show(button.dataset.open !== "1"); });
    return button;
  }

  function size(bytes) {
    if (bytes < 1000) return bytes + " bytes";
    if (bytes < 1000000) return Math.floor(bytes / 1000) + " KB";
    return (bytes / 1000000).toFixed(1) + " MB";
  }

  // A file of a message: fetched with the agent's token (a plain link would carry none), then
  // saved under its name.
  // A button that downloads one of an event's files (`path` below the event) under its name.
  function fileButton(cls, label, path, file, e) {
    var link = el("button", cls, label);
    link.title = "Download";
    link.type = "button";
    link.dataset.blob = file.blob;
    link.addEventListener("click", function () {
      fetch("/api/v1/threads/" + state.selected + "/events/" + e.id + path,
        { headers: { Authorization: "Bearer " + state.token } })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status === 503 ? "not on this node yet: try again in a moment" : response.statusText);
          return response.blob();
        })
        .then(function (blob) {
          var a = document.createElement("a");
          a.href = URL.createObjectURL(blob);
          a.download = file.name;
          document.body.appendChild(a);
          a.click();
          setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
        })
        .catch(function (error) { link.title = error.message; link.classList.add("failed"); });
    });
    return link;
  }

  // Uploads the chosen files; resolves to the reply's `attachments`.
  function uploadFiles(files) {
    return Promise.all(Array.prototype.map.call(files, function (file) {
      return fetch("/api/v1/attachments", {
        method: "POST",
        headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/octet-stream" },
        body: file
      }).then(function (response) {
        return response.json().then(function (json) {
          if (!response.ok) throw new Error(file.name + ": " + ((json.error && json.error.message) || response.statusText));
          return { blob: json.blob, name: file.name, media_type: file.type || "application/octet-stream" };
        });
      });
    }));
  }

  function renderContact() {
    var record = state.contact;
    $("contact-view").hidden = false;
    $("contact-name").textContent = contactLabel(record);
    var handles = $("contact-handles");
    handles.textContent = "";
    var handoff = $("handoff");
    handoff.textContent = "";
    record.handles.forEach(function (h) {
      handles.appendChild(el("li", null, h));
      var option = el("option", null, pretty(h));
      option.value = h;
      handoff.appendChild(option);
    });
    var route = state.detail.thread.route;
    if (route && route.handle) handoff.value = route.handle;
    renderWindow();
    var attributes = $("contact-attributes");
    attributes.textContent = "";
    Object.keys(record.attributes || {}).forEach(function (key) {
      if (key === "name") return; // the contact's name, shown as its title
      attributes.appendChild(el("dt", null, key));
      var value = el("dd", null, String(record.attributes[key]));
      var remove = el("button", "attr-remove", "×");
      remove.type = "button";
      remove.title = "Remove " + key;
      remove.setAttribute("aria-label", "Remove " + key);
      remove.dataset.key = key;
      remove.addEventListener("click", function () { setAttribute(key, ""); });
      value.appendChild(remove);
      // An address the customer typed: a code by mail proves it is theirs.
      if (key === "unverified email") {
        var verify = el("button", "small verify", "Verify");
        verify.type = "button";
        verify.title = "Mail the customer a one-time code; when they read it back, the address becomes theirs";
        verify.addEventListener("click", function () { sendEmailCode(String(record.attributes[key])); });
        value.appendChild(verify);
      }
      attributes.appendChild(value);
    });
    // Channels the customer withdrew consent on (an SMS STOP): nothing is sent there.
    (record.opted_out || []).forEach(function (channel) {
      attributes.appendChild(el("dt", null, "opted out"));
      attributes.appendChild(el("dd", "opted-out", channel === "all" ? "every channel" : (CHANNEL_NAMES[channel] || channel) + " (texted STOP)"));
    });
    var timeline = $("contact-timeline");
    timeline.textContent = "";
    record.timeline.filter(function (e) {
      return e.kind === "thread.message.inbound" || e.kind === "thread.message.outbound";
    }).slice(-30).forEach(function (e) {
      var item = el("li");
      var channel = e.kind === "thread.message.inbound" ? (e.handle || "").split(":")[0] : "reply";
      item.appendChild(el("span", "chan", channel));
      var files = (e.attachments || []).map(function (f) { return " [" + f.name + "]"; }).join("");
      item.appendChild(document.createTextNode(e.erased ? "(erased)" : (e.display_text || e.text || "") + files));
      timeline.appendChild(item);
    });
  }

  // ---- "verify this email": a code by mail, read back by the customer ----
  function sendEmailCode(address) {
    $("contact-error").textContent = "";
    // One code at a time: the button waits for the answer.
    document.querySelectorAll("#contact-attributes .verify").forEach(function (b) { b.disabled = true; });
    api("POST", "/contacts/" + state.contact.id + "/email-verification", { address: address }).then(function (sent) {
      $("verify-form").hidden = false;
      $("verify-status").textContent = "A code went to " + address + ": ask the customer to read it to you.";
      $("verify-code").value = "";
      $("verify-code").focus();
    }).catch(function (error) { $("contact-error").textContent = error.message; })
      .then(function () { document.querySelectorAll("#contact-attributes .verify").forEach(function (b) { b.disabled = false; }); });
  }
  $("verify-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("contact-error").textContent = "";
    api("POST", "/contacts/" + state.contact.id + "/email-verification/confirm", { code: $("verify-code").value })
      .then(function (verified) {
        $("verify-form").hidden = true;
        $("verify-status").textContent = "";
        if (verified.contact !== state.contact.id) state.contact.id = verified.contact;
        return reloadContact();
      })
      .catch(function (error) { $("contact-error").textContent = error.message; });
  });

  // ---- the contact panel: rename, details, linking a handle, merging ----
  function contactLabel(contact) {
    return contact.display_name || pretty(contact.handles[0]) || ("Contact " + contact.id.slice(0, 8));
  }

  function reloadContact() {
    if (!state.contact) return Promise.resolve();
    var id = state.contact.id;
    return api("GET", "/contacts/" + id).then(function (record) {
      if (!state.contact || state.contact.id !== id) return;
      state.contact = record;
      renderContact();
      // The conversation's title names the contact too.
      if (state.detail && state.detail.thread.contact_name !== record.display_name) {
        state.detail.thread.contact_name = record.display_name;
        renderThread();
      }
    });
  }

  function contactChange(method, path, body) {
    $("contact-error").textContent = "";
    return api(method, "/contacts/" + state.contact.id + path, body)
      .then(function () { return reloadContact(); })
      .then(function () { loadThreads(); return true; })
      .catch(function (error) { $("contact-error").textContent = error.message; return false; });
  }

  function setAttribute(key, value) {
    return contactChange("POST", "/attributes", { key: key, value: value });
  }

  $("rename").addEventListener("click", function () {
    $("rename-form").hidden = false;
    $("rename-input").value = state.contact.display_name || "";
    $("rename-input").focus();
  });
  $("rename-cancel").addEventListener("click", function () { $("rename-form").hidden = true; });
  $("rename-form").addEventListener("submit", function (event) {
    event.preventDefault();
    setAttribute("name", $("rename-input").value).then(function (done) {
      if (done) $("rename-form").hidden = true;
    });
  });
  Object.keys(CHANNEL_NAMES).forEach(function (channel) {
    var option = el("option", null, channel);
    option.value = channel;
    $("link-channel").appendChild(option);
  });
  $("link-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var address = $("link-address").value.trim();
    if (!address) return;
    contactChange("POST", "/handles", { handle: $("link-channel").value + ":" + address }).then(function (done) {
      if (done) $("link-address").value = "";
    });
  });
  $("attribute-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("attribute-key").value.trim();
    if (!key) return;
    setAttribute(key, $("attribute-value").value).then(function (done) {
      if (done) { $("attribute-key").value = ""; $("attribute-value").value = ""; }
    });
  });

  var mergeSearch = null;
  function closeMerge() {
    $("merge-preview").hidden = true;
    $("merge-results").textContent = "";
    $("merge-search").value = "";
    state.mergeFrom = null;
  }
  $("merge-search").addEventListener("input", function () {
    clearTimeout(mergeSearch);
    var needle = this.value.trim();
    mergeSearch = setTimeout(function () {
      var results = $("merge-results");
      if (!needle) { results.textContent = ""; return; }
      api("GET", "/contacts?q=" + encodeURIComponent(needle)).then(function (found) {
        results.textContent = "";
        found.contacts.filter(function (c) { return c.id !== state.contact.id; }).forEach(function (c) {
          var item = el("li", "merge-result", contactLabel(c) + (c.handles.length ? " · " + c.handles.map(pretty).join(", ") : ""));
          item.dataset.contact = c.id;
          item.tabIndex = 0;
          item.addEventListener("click", function () { previewMerge(c.id); });
          results.appendChild(item);
        });
        if (!results.children.length) results.appendChild(el("li", "none", "No other contact matches."));
      }).catch(function (error) { $("contact-error").textContent = error.message; });
    }, 200);
  });

  function previewMerge(from) {
    $("contact-error").textContent = "";
    api("GET", "/contacts/merge?from=" + from + "&into=" + state.contact.id).then(function (preview) {
      state.mergeFrom = from;
      $("merge-results").textContent = "";
      var other = preview.from;
      $("merge-summary").textContent = "Merge " + contactLabel(other) + " (" + other.handles.map(pretty).join(", ") +
        "; " + other.threads + (other.threads === 1 ? " conversation" : " conversations") + ") into " +
        contactLabel(preview.into) + "? Its handles, details and conversations join this contact's record.";
      var evidence = $("merge-evidence");
      evidence.textContent = "";
      if (!preview.evidence.length) {
        evidence.appendChild(el("li", "none", "Nothing on record links these two contacts: merge only if you know they are the same person."));
      }
      preview.evidence.forEach(function (fact) { evidence.appendChild(el("li", "evidence", fact)); });
      $("merge-preview").hidden = false;
      $("merge-preview").scrollIntoView({ block: "nearest" });
    }).catch(function (error) { $("contact-error").textContent = error.message; });
  }
  $("merge-cancel").addEventListener("click", closeMerge);
  $("merge-confirm").addEventListener("click", function () {
    if (!state.mergeFrom) return;
    $("contact-error").textContent = "";
    api("POST", "/contacts/merge", { from: state.mergeFrom, into: state.contact.id }).then(function () {
      closeMerge();
      return reloadContact();
    }).then(loadThreads).catch(function (error) { $("contact-error").textContent = error.message; });
  });

  function act(path, body) {
    $("compose-error").textContent = "";
    return api("POST", "/threads/" + state.selected + path, body)
      .then(loadThread)
      .catch(function (error) { $("compose-error").textContent = error.message; });
  }

  $("assign-me").addEventListener("click", function () {
    var mine = state.detail.thread.assignee === state.me.id;
    act("/assign", { assignee: mine ? null : state.me.id });
  });
  $("team").addEventListener("change", function () {
    act("/team", { team: this.value || null });
  });
  $("assignee").addEventListener("change", function () {
    act("/assign", { assignee: this.value || null });
  });
  $("status").addEventListener("change", function () {
    var hour = 3600 * 1000;
    if (this.value === "snooze-4h") {
      act("/status", { status: "snoozed", until: Date.now() + 4 * hour });
    } else if (this.value === "snooze-1d") {
      var tomorrow = new Date();
      tomorrow.setDate(tomorrow.getDate() + 1);
      tomorrow.setHours(9, 0, 0, 0);
      act("/status", { status: "snoozed", until: tomorrow.getTime() });
    } else {
      act("/status", { status: this.value });
    }
  });
  $("label-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var label = $("label-input").value.trim();
    if (!label) return;
    $("label-input").value = "";
    act("/labels", { add: [label] });
  });
  $("handoff-form").addEventListener("submit", function (e) {
    e.preventDefault();
    act("/handoff", { handle: $("handoff").value });
  });

  function setMode(mode) {
    state.mode = mode;
    $("mode-reply").classList.toggle("active", mode === "reply");
    $("mode-note").classList.toggle("active", mode === "note");
    $("composer").classList.toggle("noting", mode === "note");
    $("compose").placeholder = mode === "note" ? "Write an internal note… (Ctrl+Enter to save)" : "Write a reply… (Ctrl+Enter to send)";
    $("send").textContent = mode === "note" ? "Save note" : "Send";
    updateSend();
    updateSegments();
    $("compose").focus();
  }
  $("mode-reply").addEventListener("click", function () { setMode("reply"); });
  $("mode-note").addEventListener("click", function () { setMode("note"); });
  var sending = false;
  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("compose").value.trim();
    var files = state.mode === "note" ? [] : $("attach").files;
    if ((!text && !files.length) || sending) return;
    lastTyping = 0;
    sending = true;
    $("send").disabled = true;
    $("compose-error").textContent = "";
    // Sent once: the text is cleared as soon as the node has it, whatever happens after.
    uploadFiles(files)
      .then(function (attachments) {
        var body = state.mode === "note" ? { text: text } : { text: text, attachments: attachments };
        if (state.mode === "reply" && state.replyTo) body.reply_to = state.replyTo.id;
        return api("POST", "/threads/" + state.selected + (state.mode === "note" ? "/notes" : "/replies"), body);
      })
      .then(function () {
        $("compose").value = "";
        $("attach").value = "";
        updateSegments();
        if (state.mode === "reply") setReplyTo(null);
        return loadThread().catch(function () { /* the live stream will refresh it */ });
      })
      .catch(function (error) { $("compose-error").textContent = error.message; })
      .then(function () { sending = false; updateSend(); });
  });
  $("compose").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("send").click(); }
  });

  // ---- search: contacts by name, handle or detail; messages by their words ----
  var searchTimer = null;
  var searchCursor = null;
  var searchSeq = 0;
  function searchMode(on) {
    $("search-results").hidden = !on;
    $("thread-list").hidden = on;
    if (on) {
      // The filters on the left narrow the search too: say which.
      $("list-empty").hidden = true;
      $("list-title").textContent = "Search in " + TITLES[state.filter] + (state.label ? " · " + state.label : "");
    } else {
      renderThreads();
    }
  }
  function runSearch(more) {
    var seq = ++searchSeq;
    var q = filterParams();
    q.unshift("q=" + encodeURIComponent(state.search));
    var days = Number($("search-when").value);
    if (days) q.push("from=" + (Date.now() - days * 86400000));
    if (more && searchCursor) q.push("cursor=" + searchCursor);
    searchMode(true);
    if (!more) {
      $("search-status").textContent = "Searching…";
      $("contact-results").textContent = "";
      $("message-results").textContent = "";
      api("GET", "/contacts?q=" + encodeURIComponent(state.search)).then(function (found) {
        if (seq !== searchSeq) return;
        $("contacts-heading").hidden = !found.contacts.length;
        found.contacts.forEach(function (c) {
          var item = el("li", "thread-item contact-result");
          item.appendChild(el("span", "who", c.display_name || pretty(c.handles[0]) || "Contact " + c.id.slice(0, 8)));
          item.appendChild(el("span", "what", c.handles.map(pretty).join(" · ")));
          item.addEventListener("click", function () { openContact(c.id); });
          $("contact-results").appendChild(item);
        });
      }).catch(function () { $("contacts-heading").hidden = true; });
    }
    api("GET", "/search?" + q.join("&")).then(function (found) {
      if (seq !== searchSeq) return;
      searchCursor = found.next_cursor;
      found.messages.forEach(function (m) {
        var item = el("li", "thread-item message-result");
        item.dataset.event = m.event;
        item.appendChild(el("span", "who", who(m.thread)));
        item.appendChild(el("span", "when", ago(m.time)));
        var kind = m.kind === "thread.note" ? "note" : (m.kind === "thread.message.outbound" ? "reply" : "message");
        item.appendChild(el("span", "what", kind + " · " + (m.thread.route ? m.thread.route.channel : m.thread.opened_on) + " · " + m.thread.status));
        var text = el("span", "snippet");
        m.snippet.forEach(function (part) { text.appendChild(part.match ? el("mark", null, part.text) : document.createTextNode(part.text)); });
        item.appendChild(text);
        item.addEventListener("click", function () {
          state.focus = m.event;
          state.marked = m.event;
          if (state.selected === m.thread.id) renderThread(); else select(m.thread.id);
        });
        $("message-results").appendChild(item);
      });
      var shown = $("message-results").children.length;
      $("messages-heading").hidden = !shown;
      $("search-more").hidden = !found.next_cursor;
      var status = shown ? "" : "No messages found.";
      if (!found.index.ready) status += " Still indexing (" + found.index.threads_done + " of " + found.index.threads_total + " conversations): more may be found in a moment.";
      $("search-status").textContent = status.trim();
      $("search-status").hidden = !status.trim();
    }).catch(function (error) {
      if (seq !== searchSeq) return;
      $("search-status").hidden = false;
      $("search-status").textContent = error.message;
    });
  }
  // A contact found: its latest conversation.
  function openContact(id) {
    api("GET", "/threads?contact=" + id + "&limit=1").then(function (page) {
      if (page.threads.length) select(page.threads[0].id);
      else $("search-status").textContent = "No conversation with this contact.";
    }).catch(function (error) { $("search-status").textContent = error.message; });
  }
  function searchChanged() {
    clearTimeout(searchTimer);
    state.search = $("search").value.trim();
    if (!state.search) { searchSeq++; searchMode(false); return; }
    searchTimer = setTimeout(function () { runSearch(false); }, 250);
  }
  $("search").addEventListener("input", searchChanged);
  $("search-when").addEventListener("change", function () { if (state.search) runSearch(false); });
  $("search-form").addEventListener("submit", function (e) { e.preventDefault(); clearTimeout(searchTimer); if (state.search) runSearch(false); });
  $("search-more").addEventListener("click", function () { runSearch(true); });

  // ---- keyboard ----
  document.addEventListener("keydown", function (e) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (e.key === "Escape" && typing) { document.activeElement.blur(); return; }
    if (typing || e.ctrlKey || e.metaKey || e.altKey || $("app").hidden) return;
    var index = state.threads.findIndex(function (t) { return t.id === state.selected; });
    if (e.key === "j" || e.key === "k") {
      var next = state.threads[Math.min(state.threads.length - 1, Math.max(0, index + (e.key === "j" ? 1 : -1)))];
      if (next) select(next.id);
    } else if (state.selected && e.key === "r") { e.preventDefault(); setMode("reply"); }
    else if (state.selected && e.key === "n") { e.preventDefault(); setMode("note"); }
    else if (state.selected && e.key === "e") { act("/status", { status: "resolved" }); }
    else if (e.key === "/") { e.preventDefault(); $("search").focus(); }
  });

  // ---- typing, both ways ----
  var customerTimer = null;
  function customerTyping(thread) {
    if (thread !== state.selected) return;
    $("customer-typing").hidden = false;
    clearTimeout(customerTimer);
    customerTimer = setTimeout(function () { $("customer-typing").hidden = true; }, 4000);
  }
  var lastTyping = 0;
  $("compose").addEventListener("input", function () {
    updateSegments();
    var now = Date.now();
    if (state.mode !== "reply" || !state.selected || now - lastTyping < 3000) return;
    lastTyping = now;
    api("POST", "/threads/" + state.selected + "/typing", {}).catch(function () {});
  });

  // ---- canned replies: "/" and a shortcode in the composer inserts one ----
  var canned = { replies: [], matches: [], active: 0 };
  function loadCanned() {
    return api("GET", "/canned-replies").then(function (list) {
      canned.replies = list.replies;
      renderCannedList();
    }).catch(function () { /* the next change loads them again */ });
  }
  function fillIn(text) {
    var name = (state.contact && state.contact.display_name) || "";
    return text.replace(/\{contact\.name\}/g, name).replace(/\{agent\.name\}/g, state.me ? state.me.name : "");
  }
  // The "/code" being typed just before the caret, if any.
  function typedShortcode() {
    var box = $("compose");
    var before = box.value.slice(0, box.selectionStart);
    var match = /(^|\s)\/([a-z0-9_-]*)$/.exec(before);
    return match ? { start: before.length - match[2].length - 1, code: match[2] } : null;
  }
  function closeCannedMenu() { $("canned-menu").hidden = true; canned.matches = []; }
  function updateCannedMenu() {
    var typed = typedShortcode();
    if (!typed || state.mode !== "reply" && state.mode !== "note") { closeCannedMenu(); return; }
    canned.matches = canned.replies.filter(function (r) { return r.shortcode.indexOf(typed.code) === 0; });
    var menu = $("canned-menu");
    menu.textContent = "";
    if (!canned.matches.length) { menu.hidden = true; return; }
    canned.active = Math.min(canned.active, canned.matches.length - 1);
    canned.matches.forEach(function (reply, i) {
      var item = el("li", i === canned.active ? "active" : null);
      item.setAttribute("role", "option");
      item.dataset.shortcode = reply.shortcode;
      item.appendChild(el("span", "code", "/" + reply.shortcode));
      item.appendChild(document.createTextNode(fillIn(reply.text)));
      item.addEventListener("mousedown", function (e) { e.preventDefault(); insertCanned(reply); });
      menu.appendChild(item);
    });
    menu.hidden = false;
  }
  function insertCanned(reply) {
    var typed = typedShortcode();
    var box = $("compose");
    if (!typed) return;
    var text = fillIn(reply.text);
    var end = box.selectionStart;
    box.value = box.value.slice(0, typed.start) + text + box.value.slice(end);
    var caret = typed.start + text.length;
    box.setSelectionRange(caret, caret);
    closeCannedMenu();
    updateSegments();
    box.focus();
  }
  $("compose").addEventListener("input", function () { canned.active = 0; updateCannedMenu(); });
  $("compose").addEventListener("blur", closeCannedMenu);
  $("compose").addEventListener("keydown", function (e) {
    if ($("canned-menu").hidden || !canned.matches.length) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      var n = canned.matches.length;
      canned.active = (canned.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      updateCannedMenu();
    } else if ((e.key === "Enter" && !e.ctrlKey && !e.metaKey) || e.key === "Tab") {
      e.preventDefault();
      e.stopImmediatePropagation();
      insertCanned(canned.matches[canned.active]);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      closeCannedMenu();
    }
  });

  function renderCannedList() {
    var list = $("canned-list");
    list.textContent = "";
    canned.replies.forEach(function (reply) {
      var item = el("li");
      item.dataset.shortcode = reply.shortcode;
      item.appendChild(el("span", "code", "/" + reply.shortcode));
      item.appendChild(el("span", "text", reply.text));
      var remove = el("button", "small", "Delete");
      remove.type = "button";
      remove.addEventListener("click", function () {
        api("DELETE", "/canned-replies/" + reply.shortcode).then(loadCanned)
          .catch(function (error) { $("canned-error").textContent = error.message; });
      });
      item.appendChild(remove);
      item.addEventListener("dblclick", function () {
        $("canned-shortcode").value = reply.shortcode;
        $("canned-text").value = reply.text;
      });
      list.appendChild(item);
    });
    if (!canned.replies.length) list.appendChild(el("li", "meta", "None yet."));
  }
  $("canned-open").addEventListener("click", function () {
    $("canned-error").textContent = "";
    loadCanned();
    $("canned-dialog").showModal();
  });
  $("canned-close").addEventListener("click", function () { $("canned-dialog").close(); });
  $("canned-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("canned-error").textContent = "";
    api("POST", "/canned-replies", { shortcode: $("canned-shortcode").value.trim(), text: $("canned-text").value })
      .then(function () {
        $("canned-shortcode").value = "";
        $("canned-text").value = "";
        return loadCanned();
      })
      .catch(function (error) { $("canned-error").textContent = error.message; });
  });

  // ---- agents, for admins: add, revoke, a new token, a role ----
  function showToken(agent, token) {
    var shown = $("agent-token");
    shown.textContent = "Token for " + agent.name + " (shown once): " + token;
    shown.dataset.token = token;
    shown.hidden = false;
  }
  function agentsError(error) { $("agents-error").textContent = error.message; }
  function loadAgents() {
    return api("GET", "/agents").then(function (list) {
      var items = $("agents-list");
      items.textContent = "";
      list.agents.forEach(function (agent) {
        state.agents[agent.id] = agent.name;
        state.revoked[agent.id] = agent.revoked;
        var item = el("li", agent.revoked ? "revoked" : null);
        item.dataset.agent = agent.id;
        item.appendChild(el("span", "name", agent.name + (agent.id === state.me.id ? " (you)" : "")));
        if (agent.revoked) { item.appendChild(el("span", "meta", "revoked")); items.appendChild(item); return; }
        var role = el("select", "role");
        role.setAttribute("aria-label", "Role of " + agent.name);
        ["agent", "admin"].forEach(function (name) {
          var option = el("option", null, name);
          option.value = name;
          role.appendChild(option);
        });
        role.value = agent.role;
        role.addEventListener("change", function () {
          $("agents-error").textContent = "";
          api("POST", "/agents/" + agent.id + "/role", { role: role.value }).then(loadAgents).catch(function (error) {
            agentsError(error);
            role.value = agent.role;
          });
        });
        item.appendChild(role);
        var token = el("button", "small token", "New token");
        token.type = "button";
        token.addEventListener("click", function () {
          $("agents-error").textContent = "";
          api("POST", "/agents/" + agent.id + "/token").then(function (answer) { showToken(answer.agent, answer.token); }).catch(agentsError);
        });
        item.appendChild(token);
        var revoke = el("button", "small revoke", "Revoke");
        revoke.type = "button";
        revoke.addEventListener("click", function () {
          $("agents-error").textContent = "";
          api("POST", "/agents/" + agent.id + "/revoke").then(loadAgents).catch(agentsError);
        });
        item.appendChild(revoke);
        items.appendChild(item);
      });
    }).catch(agentsError);
  }
  // ---- reports (admins) ----
  var CHANNEL_COLOURS = { webchat: "#2563eb", email: "#0d9488", whatsapp: "#16a34a", messenger: "#7c3aed",
    instagram: "#db2777", slack: "#ca8a04", telegram: "#0284c7", sms: "#ea580c", matrix: "#475569", xmpp: "#9333ea" };
  function reportSpan() {
    var to = Date.now();
    return "?from=" + (to - Number($("reports-span").value) * 86400000) + "&to=" + to;
  }
  function loadReport() {
    $("reports-error").textContent = "";
    api("GET", "/reports" + reportSpan()).then(function (report) {
      var figures = $("reports-figures");
      figures.textContent = "";
      function figure(label, value) {
        var box = el("div");
        box.appendChild(el("dt", null, label));
        box.appendChild(el("dd", null, value));
        figures.appendChild(box);
      }
      function spread(s) { return s.count ? duration(s.p50) + " / " + duration(s.p90) : "–"; }
      var breaches = report.breaches;
      figure("Conversations", String(report.conversations));
      figure("First response p50 / p90", spread(report.first_response));
      figure("Resolution p50 / p90", spread(report.resolution));
      figure("SLA missed", ["first_response", "next_response", "resolution"].map(function (k) {
        return (breaches[k] || 0) + " " + SLA_NAMES[k];
      }).join(" · "));
      figure("Satisfaction", report.csat.count
        ? report.csat.satisfied_percent + "% of " + report.csat.count + (report.csat.count === 1 ? " rating" : " ratings")
        : "no ratings");
      if (report.unknown) figure("Not yet known", report.unknown + " (written before reports)");
      var chart = $("reports-chart");
      chart.textContent = "";
      var most = Math.max.apply(null, report.by_day.map(function (d) { return d.total; }).concat([1]));
      report.by_day.forEach(function (day) {
        var column = el("div", "day");
        column.title = day.day + ": " + day.total;
        column.dataset.day = day.day;
        column.dataset.total = day.total;
        Object.keys(day.channels).forEach(function (channel) {
          var bar = el("div", "bar");
          bar.style.height = (100 * day.channels[channel] / most) + "%";
          bar.style.background = CHANNEL_COLOURS[channel] || "#64748b";
          column.appendChild(bar);
        });
        chart.appendChild(column);
      });
      var legend = $("reports-legend");
      legend.textContent = "";
      Object.keys(report.by_channel).forEach(function (channel) {
        var option = document.querySelector('#channel option[value="' + channel + '"]');
        var item = el("span", null, (option ? option.textContent : channel) + " " + report.by_channel[channel]);
        item.style.setProperty("--swatch", CHANNEL_COLOURS[channel] || "#64748b");
        legend.appendChild(item);
      });
      var rows = $("reports-agents").querySelector("tbody");
      rows.textContent = "";
      report.agents.forEach(function (a) {
        var row = el("tr");
        [state.agents[a.agent] || a.agent.slice(0, 8), String(a.first_replies),
          a.first_response.count ? duration(a.first_response.p50) : "–", String(a.resolved)].forEach(function (text) {
          row.appendChild(el("td", null, text));
        });
        rows.appendChild(row);
      });
    }).catch(function (error) { $("reports-error").textContent = error.message; });
  }
  $("reports-open").addEventListener("click", function () { loadReport(); $("reports-dialog").showModal(); });
  $("reports-span").addEventListener("change", loadReport);
  $("reports-close").addEventListener("click", function () { $("reports-dialog").close(); });
  $("reports-csv").addEventListener("click", function () {
    fetch("/api/v1/reports/conversations.csv" + reportSpan(), { headers: { Authorization: "Bearer " + state.token } })
      .then(function (response) {
        if (!response.ok) throw new Error("the report could not be made (" + response.status + ")");
        return response.blob();
      })
      .then(function (blob) {
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = "conversations.csv";
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      })
      .catch(function (error) { $("reports-error").textContent = error.message; });
  });

  $("agents-open").addEventListener("click", function () {
    $("agents-error").textContent = "";
    $("agent-token").hidden = true;
    $("teams-error").textContent = "";
    loadAgents().then(function () { editTeam("", []); return loadTeams(); });
    $("agents-dialog").showModal();
  });
  $("agents-close").addEventListener("click", function () { $("agents-dialog").close(); });
  $("agent-form").addEventListener("submit", function (event) {
    event.preventDefault();
    $("agents-error").textContent = "";
    api("POST", "/agents", { name: $("agent-name").value, role: $("agent-admin").checked ? "admin" : "agent" })
      .then(function (answer) {
        showToken(answer.agent, answer.token);
        $("agent-name").value = "";
        $("agent-admin").checked = false;
        return loadAgents();
      })
      .catch(agentsError);
  });

  // ---- notifications: a desktop notification and a sound for a new conversation, and for a
  // new message in a conversation assigned to this agent (not for the one on screen) ----
  var notify = { on: localStorage.getItem(NOTIFY_KEY) === "on", seen: null, since: 0, audio: null, timer: null };
  function showNotifyState() {
    $("notify").textContent = notify.on ? "Notifications on" : "Notifications off";
    $("notify").setAttribute("aria-pressed", notify.on ? "true" : "false");
  }
  function unlockAudio() {
    // Browsers let a page play sound once the user has acted on it: made in the click.
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!notify.audio && Context) notify.audio = new Context();
    if (notify.audio && notify.audio.state === "suspended") notify.audio.resume();
  }
  function chime() {
    var ctx = notify.audio;
    if (!ctx) return;
    var tone = ctx.createOscillator();
    var volume = ctx.createGain();
    tone.frequency.value = 880;
    volume.gain.setValueAtTime(0.15, ctx.currentTime);
    volume.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.4);
    tone.connect(volume);
    volume.connect(ctx.destination);
    tone.start();
    tone.stop(ctx.currentTime + 0.4);
  }
  $("notify").addEventListener("click", function () {
    notify.on = !notify.on;
    localStorage.setItem(NOTIFY_KEY, notify.on ? "on" : "off");
    if (notify.on) {
      unlockAudio();
      if (window.Notification && Notification.permission === "default") Notification.requestPermission();
    }
    showNotifyState();
  });
  document.addEventListener("click", function () { if (notify.on) unlockAudio(); }, { once: true });
  showNotifyState();

  function alertAgent(thread, isNew, last) {
    if (!notify.on) return;
    chime();
    if (!window.Notification || Notification.permission !== "granted") return;
    var shown = new Notification((isNew ? "New conversation: " : "") + who(thread), {
      body: last.text || "", tag: thread.id
    });
    shown.onclick = function () { window.focus(); select(thread.id); shown.close(); };
  }

  // The newest threads, whatever the list's filter: which got a customer's message since the
  // last look. The first look only notes where each stands.
  function checkNewMessages() {
    return api("GET", "/threads?limit=20").then(function (page) {
      var first = notify.seen === null;
      if (first) {
        notify.seen = {};
        // Conversations opened after this (the node's clock) are new.
        notify.since = page.threads.reduce(function (t, thread) { return Math.max(t, thread.last_activity); }, 0);
      }
      page.threads.forEach(function (thread) {
        var last = thread.last_message;
        if (!last) return;
        var before = notify.seen[thread.id];
        notify.seen[thread.id] = last.time;
        if (first || before >= last.time || last.direction !== "inbound") return;
        var isNew = before === undefined && thread.opened_at > notify.since;
        if (!isNew && thread.assignee !== state.me.id) return;
        if (document.visibilityState === "visible" && state.selected === thread.id) return;
        alertAgent(thread, isNew, last);
      });
    }).catch(function () { /* the next change looks again */ });
  }

  // ---- live updates: the SSE stream, read with fetch so the token stays in a header ----
  var refreshList = null;
  function changed(scope, kind) {
    clearTimeout(refreshList);
    refreshList = setTimeout(loadThreads, 150);
    if (kind === "thread.message.inbound") {
      clearTimeout(notify.timer);
      notify.timer = setTimeout(checkNewMessages, 150);
    }
    if (state.selected && scope === "thread:" + state.selected) loadThread();
    else if (kind === "directory.set_canned_reply") loadCanned();
    else if (kind === "directory.set_team") loadTeams();
    // Another agent (or node) changed a contact: the panel shows it as it is now.
    else if (state.contact && scope && scope.indexOf("directory") === 0) reloadContact();
  }

  function listen() {
    fetch("/api/v1/stream", { headers: { Authorization: "Bearer " + state.token } }).then(function (response) {
      if (!response.ok || !response.body) throw new Error("stream refused");
      $("live").classList.add("on");
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) throw new Error("stream ended");
          buffer += decoder.decode(chunk.value, { stream: true });
          var blocks = buffer.split("\n\n");
          buffer = blocks.pop();
          blocks.forEach(function (block) {
            var event = "message", data = "";
            block.split("\n").forEach(function (line) {
              if (line.indexOf("event:") === 0) event = line.slice(6).trim();
              else if (line.indexOf("data:") === 0) data += line.slice(5).trim();
            });
            if (event === "change") { try { var change = JSON.parse(data); changed(change.scope, change.kind); } catch (e) { /* ignore */ } }
            else if (event === "typing") { try { customerTyping(JSON.parse(data).thread); } catch (e) { /* ignore */ } }
            else if (event === "lagged") { loadThreads(); if (state.selected) loadThread(); }
          });
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      $("live").classList.remove("on");
      setTimeout(function () { loadThreads(); listen(); }, 2000);
    });
  }

  var saved = localStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved); else showSignIn();
})();
