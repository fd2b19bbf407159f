// Threadline web chat widget: plain JS, no build step, no dependencies.
// A website adds <script src="https://NODE/webchat/widget.js" async></script>.
(function () {
  "use strict";
  if (window.ThreadlineChat) return;
  var script = document.currentScript;
  var base = new URL(script ? script.src : "/webchat/widget.js", location.href);
  var wsUrl = base.origin.replace(/^http/, "ws") + "/webchat/ws";
  var KEY = "threadline.webchat.session";

  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = base.origin + "/webchat/widget.css";
  document.head.appendChild(css);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  var root = el("div", "tl-chat");
  var panel = el("section", "tl-chat-panel");
  panel.hidden = true;
  panel.setAttribute("aria-label", "Chat");
  var header = el("div", "tl-chat-header");
  var titles = el("div");
  var title = el("div", "tl-chat-title", "Chat with us");
  titles.appendChild(title);
  var status = el("div", "tl-chat-status", "Connecting…");
  titles.appendChild(status);
  var close = el("button", "tl-chat-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Close chat");
  header.appendChild(titles);
  header.appendChild(close);
  var notice = el("div", "tl-chat-notice");
  notice.hidden = true;
  var log = el("div", "tl-chat-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var empty = el("div", "tl-chat-empty", "Ask us anything. We usually answer within minutes; if we are away, we will answer here later.");
  log.appendChild(empty);
  // "We're away": the visitor may leave an email address to be answered at.
  var emailForm = el("form", "tl-chat-email");
  emailForm.hidden = true;
  // What happens to the address: the team sees it beside the conversation (an unverified
  // note, not a channel replies go to), so the widget promises that and no more.
  emailForm.appendChild(el("label", null, "Nobody online? Leave your email so the team can see it with your message:"));
  var emailInput = el("input");
  emailInput.type = "email";
  emailInput.placeholder = "you@example.com";
  emailInput.setAttribute("aria-label", "Your email address");
  var emailSave = el("button", null, "Save");
  emailSave.type = "submit";
  var emailRow = el("div", "tl-chat-email-row");
  emailRow.appendChild(emailInput);
  emailRow.appendChild(emailSave);
  emailForm.appendChild(emailRow);
  var emailDone = el("div", "tl-chat-email-done");
  emailDone.hidden = true;
  var settings = window.threadlineSettings || {};
  var agentsOnline = false;
  var emailLeft = !!settings.email;

  // "Continue on Messenger / WhatsApp": a one-time link to carry on from the visitor's phone.
  var APP_NAMES = { messenger: "Messenger", whatsapp: "WhatsApp", instagram: "Instagram", email: "email", matrix: "Matrix", xmpp: "XMPP", telegram: "Telegram", slack: "Slack", sms: "SMS" };
  // Apps whose links cannot fill in the first message (matrix.to): the visitor sends it.
  // (An sms: link fills it in on a phone; on a computer the visitor texts it from theirs.)
  var TYPE_FIRST_MESSAGE = { matrix: true, xmpp: true, slack: true, sms: true };
  var continueBar = el("div", "tl-chat-continue");
  continueBar.hidden = true;
  var continueLinks = el("div", "tl-chat-continue-row");
  continueBar.appendChild(continueLinks);
  var continueOn = [];
  function offerContinue() {
    continueLinks.textContent = "";
    continueOn.forEach(function (channel) {
      var button = el("button", "tl-chat-continue-button", "Continue on " + (APP_NAMES[channel] || channel));
      button.type = "button";
      button.dataset.channel = channel;
      button.addEventListener("click", function () {
        if (connected) socket.send(JSON.stringify({ type: "continue", channel: channel }));
      });
      continueLinks.appendChild(button);
    });
    continueBar.hidden = continueOn.length === 0 || !log.querySelector(".tl-chat-msg");
  }
  function showContinueLink(channel, url) {
    continueLinks.textContent = "";
    var link = el("a", "tl-chat-continue-link", "Open " + (APP_NAMES[channel] || channel) + " to continue");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    continueLinks.appendChild(link);
    var first = /[?&;](?:text|body)=([^&]*)/.exec(url);
    if (TYPE_FIRST_MESSAGE[channel] && first) {
      var number = channel === "sms" ? /^sms:([+0-9]+)/.exec(url) : null;
      var message = el("div", "tl-chat-continue-note", number ?
        "Or text this to " + number[1] + " from your phone:" : "Send this as your first message there:");
      message.appendChild(el("code", "tl-chat-continue-code", decodeURIComponent(first[1])));
      continueLinks.appendChild(message);
    }
    continueLinks.appendChild(el("div", "tl-chat-continue-note", "This link works once, for 15 minutes. Send the first message as it is."));
    continueBar.hidden = false;
  }
  // The conversation went on in another app: say where (live, or on return to the page).
  function showMoved(channel) {
    emailForm.hidden = true;
    continueLinks.textContent = "";
    continueLinks.appendChild(el("div", "tl-chat-continue-moved",
      "This conversation continues on " + (APP_NAMES[channel] || channel) +
      ". Our replies go there now; write here to have them here again."));
    continueBar.hidden = false;
  }

  var typingLine = el("div", "tl-chat-typing", "Typing…");
  typingLine.hidden = true;
  var form = el("form", "tl-chat-form");
  var input = el("textarea", "tl-chat-input");
  input.placeholder = "Write a message…";
  input.setAttribute("aria-label", "Message");
  input.maxLength = 4000;
  var send = el("button", "tl-chat-send", "Send");
  send.type = "submit";
  // Files: chosen here, uploaded first, then sent with the message.
  var MAX_FILES = 5, MAX_FILE_BYTES = 10 * 1024 * 1024;
  var fileInput = el("input", "tl-chat-file");
  fileInput.type = "file";
  fileInput.multiple = true;
  fileInput.setAttribute("aria-label", "Attach files");
  var attach = el("button", "tl-chat-attach", "+");
  attach.type = "button";
  attach.title = "Send a file";
  attach.setAttribute("aria-label", "Send a file");
  attach.addEventListener("click", function () { fileInput.click(); });
  form.appendChild(attach);
  form.appendChild(fileInput);
  form.appendChild(input);
  form.appendChild(send);
  panel.appendChild(header);
  panel.appendChild(notice);
  panel.appendChild(log);
  panel.appendChild(emailForm);
  panel.appendChild(emailDone);
  panel.appendChild(continueBar);
  panel.appendChild(typingLine);
  panel.appendChild(form);
  var launcher = el("button", "tl-chat-launcher");
  // A speech-bubble icon, drawn (no emoji font needed).
  var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "26");
  svg.setAttribute("height", "26");
  svg.setAttribute("aria-hidden", "true");
  var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
  svg.appendChild(path);
  launcher.appendChild(svg);
  launcher.type = "button";
  launcher.setAttribute("aria-label", "Open chat");
  root.appendChild(panel);
  root.appendChild(launcher);

  // How the node's operator set the widget to look ([webchat] title, greeting, color,
  // position); the defaults above until it answers.
  fetch(base.origin + "/webchat/settings").then(function (r) { return r.ok ? r.json() : null; })
    .then(function (look) {
      if (!look) return;
      title.textContent = look.title;
      panel.setAttribute("aria-label", look.title);
      empty.textContent = look.greeting;
      if (/^#[0-9a-f]{6}$/.test(look.color)) root.style.setProperty("--tl-accent", look.color);
      root.classList.toggle("tl-left", look.position === "left");
    })
    .catch(function () { /* the defaults stay */ });

  var socket = null;
  var connected = false;
  var retry = 500;
  var shown = {};      // event id -> element
  var pending = {};    // message id -> {text, element}
  var reported = {};   // agent event ids reported read

  function time(ms) {
    var d = ms ? new Date(ms) : new Date();
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function size(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return Math.round(bytes / 1024) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  // A file of a message: fetched with the session (never in a URL), saved under its name.
  function fileLink(item, file, n) {
    var link = el("button", "tl-chat-filelink", file.name + " (" + size(file.size) + ")");
    link.type = "button";
    link.dataset.n = n;
    link.addEventListener("click", function () {
      var event = item.dataset.event;
      if (!event) return;
      fetch(base.origin + "/webchat/files/" + event + "/" + n, { headers: { "X-Threadline-Session": localStorage.getItem(KEY) || "" } })
        .then(function (r) { if (!r.ok) throw new Error("the file could not be fetched"); return r.blob(); })
        .then(function (blob) {
          var a = document.createElement("a");
          a.href = URL.createObjectURL(blob);
          a.download = file.name;
          document.body.appendChild(a);
          a.click();
          setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
        })
        .catch(function (error) { notice.textContent = error.message; notice.hidden = false; });
    });
    return link;
  }

  function bubble(from, text, at, files) {
    if (empty.parentNode) empty.remove();
    var item = el("div", "tl-chat-msg " + (from === "agent" ? "tl-agent" : "tl-visitor"));
    var body = el("div", "tl-chat-text", text == null ? "(removed)" : text);
    body.hidden = text === "" && !!(files && files.length);
    item.appendChild(body);
    (files || []).forEach(function (file, n) { item.appendChild(fileLink(item, file, n)); });
    item.appendChild(el("div", "tl-chat-meta", time(at)));
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    return item;
  }

  function show(message) {
    if (shown[message.event]) return;
    var item = bubble(message.from, message.text, message.at, message.files);
    item.dataset.event = message.event;
    item.dataset.from = message.from;
    shown[message.event] = item;
    if (message.state === "seen") setSeen(item);
    markRead();
  }

  function setSeen(item) {
    if (item.classList.contains("tl-seen")) return;
    item.classList.add("tl-seen");
    var meta = item.querySelector(".tl-chat-meta");
    if (meta) meta.textContent += " · Seen";
  }

  // An agent read the visitor's messages up to this one: mark it and those before it.
  function markSeen(upTo) {
    var mine = log.querySelectorAll(".tl-visitor");
    var found = false;
    for (var i = mine.length - 1; i >= 0; i--) {
      if (mine[i].dataset.event === upTo) found = true;
      if (found) setSeen(mine[i]);
    }
  }

  function markRead() {
    if (!connected || panel.hidden || document.visibilityState !== "visible") return;
    var agents = log.querySelectorAll(".tl-agent[data-event]");
    if (!agents.length) return;
    var last = agents[agents.length - 1].dataset.event;
    if (reported[last]) return;
    reported[last] = true;
    socket.send(JSON.stringify({ type: "read", up_to: last }));
  }

  function setStatus(text) { status.textContent = text; }

  function setPresence(online) {
    agentsOnline = online;
    setStatus(online ? "We reply here" : "We're away: leave a message, we'll answer here");
    offerEmail();
  }

  function offerEmail() {
    var wrote = !!log.querySelector(".tl-visitor");
    emailForm.hidden = agentsOnline || emailLeft || !wrote;
  }

  var typingTimer = null;
  function agentTyping() {
    typingLine.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { typingLine.hidden = true; }, 4000);
  }

  var lastTyping = 0;
  function visitorTyping() {
    var now = Date.now();
    if (!connected || now - lastTyping < 3000) return;
    lastTyping = now;
    socket.send(JSON.stringify({ type: "typing" }));
  }

  function connect() {
    socket = new WebSocket(wsUrl);
    socket.onopen = function () {
      var hello = { type: "hello", session: localStorage.getItem(KEY) };
      if (settings.email && settings.emailSignature && settings.emailExpires) {
        hello.identity = { email: settings.email, expires: settings.emailExpires, signature: settings.emailSignature };
      }
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = function (msg) {
      var frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      if (frame.type === "welcome") {
        localStorage.setItem(KEY, frame.session);
        connected = true;
        retry = 500;
        root.dataset.state = "connected";
        setPresence(frame.agents_online);
        notice.hidden = true;
        frame.history.forEach(show);
        continueOn = frame.continue_on || [];
        offerContinue();
        if (frame.moved) showMoved(frame.moved);
        Object.keys(pending).forEach(function (id) {
          socket.send(JSON.stringify({ type: "message", id: id, text: pending[id].text, files: pending[id].files }));
        });
      } else if (frame.type === "ack") {
        var sent = pending[frame.id];
        if (sent) {
          delete pending[frame.id];
          if (shown[frame.event] && shown[frame.event] !== sent.element) {
            // Stored before the connection dropped: the history shows it already.
            sent.element.remove();
          } else {
            sent.element.classList.remove("tl-pending");
            sent.element.dataset.event = frame.event;
            shown[frame.event] = sent.element;
          }
          // Written here: the conversation is back here (a "continues on …" notice goes).
          var moved = continueLinks.querySelector(".tl-chat-continue-moved");
          if (moved || (continueBar.hidden && !continueLinks.querySelector("a"))) offerContinue();
        }
      } else if (frame.type === "message") {
        if (frame.from === "agent") typingLine.hidden = true;
        show(frame);
      } else if (frame.type === "continue_link") {
        showContinueLink(frame.channel, frame.url);
      } else if (frame.type === "moved") {
        showMoved(frame.channel);
      } else if (frame.type === "email_saved") {
        emailLeft = true;
        emailForm.hidden = true;
        emailDone.textContent = "Thanks: the team will see " + frame.address + " with your conversation.";
        emailDone.hidden = false;
      } else if (frame.type === "seen") {
        markSeen(frame.up_to);
      } else if (frame.type === "typing") {
        agentTyping();
      } else if (frame.type === "presence") {
        setPresence(frame.agents_online);
      } else if (frame.type === "error") {
        var failed = frame.id && pending[frame.id];
        if (failed && (frame.code === "unavailable" || frame.code === "rate_limited")) {
          // Not now: send it again in a moment (the same id: stored once).
          resendLater(frame.id, frame.code === "rate_limited" ? 2000 : 3000);
        } else if (failed) {
          delete pending[frame.id];
          failed.element.classList.remove("tl-pending");
          failed.element.classList.add("tl-failed");
        }
        notice.textContent = frame.message;
        notice.hidden = false;
      }
    };
    socket.onclose = function () {
      var wasConnected = connected;
      connected = false;
      root.dataset.state = "reconnecting";
      setStatus("Reconnecting…");
      // A socket that never opened may have been refused for this site: ask, and say so
      // rather than reconnect for ever.
      var check = wasConnected ? Promise.resolve(true) :
        fetch(base.origin + "/webchat/allowed").then(function (r) { return r.json(); })
          .then(function (answer) { return answer.allowed !== false; })
          .catch(function () { return true; });
      check.then(function (allowed) {
        if (!allowed) {
          root.dataset.state = "not-allowed";
          setStatus("Chat is not available on this site");
          empty.textContent = "This chat cannot open on this site. Please contact us another way.";
          input.disabled = true;
          send.disabled = true;
          if (window.console) console.warn("Threadline: this site (" + location.origin +
            ") is not in the node's [webchat] allowed_origins, so the chat cannot open here.");
          return;
        }
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 15000);
      });
    };
  }

  function resendLater(id, ms) {
    setTimeout(function () {
      if (pending[id] && connected) {
        socket.send(JSON.stringify({ type: "message", id: id, text: pending[id].text, files: pending[id].files }));
      }
    }, ms);
  }

  // Uploads the chosen files, then sends them as a message (with what is typed).
  fileInput.addEventListener("change", function () {
    var files = Array.prototype.slice.call(fileInput.files || []);
    fileInput.value = "";
    if (!files.length) return;
    if (!connected) { notice.textContent = "Not connected yet; try again in a moment."; notice.hidden = false; return; }
    if (files.length > MAX_FILES) { notice.textContent = "At most " + MAX_FILES + " files at a time."; notice.hidden = false; return; }
    var big = files.filter(function (f) { return f.size > MAX_FILE_BYTES || f.size === 0; });
    if (big.length) { notice.textContent = big[0].name + " is empty or larger than 10 MB."; notice.hidden = false; return; }
    notice.hidden = true;
    attach.disabled = true;
    // One at a time: a chat's uploads share the node's slots.
    var uploaded = [];
    files.reduce(function (previous, file) {
      return previous.then(function () {
        return fetch(base.origin + "/webchat/files?name=" + encodeURIComponent(file.name), {
          method: "POST",
          headers: { "X-Threadline-Session": localStorage.getItem(KEY) || "", "Content-Type": file.type || "application/octet-stream" },
          body: file
        }).then(function (r) {
          return r.json().then(function (answer) {
            if (!r.ok) throw new Error((answer.error && answer.error.message) || "the file could not be sent");
            uploaded.push(answer);
          });
        });
      });
    }, Promise.resolve()).then(function () {
      attach.disabled = false;
      submit(uploaded);
    }).catch(function (error) {
      attach.disabled = false;
      notice.textContent = error.message;
      notice.hidden = false;
    });
  });

  function submit(files) {
    files = files || [];
    var text = input.value.trim();
    if (!text && !files.length) return;
    if (new TextEncoder().encode(text).length > 4096) {
      notice.textContent = "That message is too long; please split it.";
      notice.hidden = false;
      return;
    }
    notice.hidden = true;
    input.value = "";
    lastTyping = 0; // the next keystroke is news again
    var id = "m" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    var item = bubble("visitor", text, 0, files);
    item.classList.add("tl-pending");
    pending[id] = { text: text, files: files, element: item };
    offerEmail();
    if (connected) socket.send(JSON.stringify({ type: "message", id: id, text: text, files: files }));
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); submit([]); });
  emailForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var address = emailInput.value.trim();
    if (address && connected) socket.send(JSON.stringify({ type: "email", address: address }));
  });
  input.addEventListener("input", visitorTyping);
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit([]); }
  });
  function toggle(open) {
    panel.hidden = !open;
    launcher.setAttribute("aria-label", open ? "Close chat" : "Open chat");
    if (open) { input.focus(); markRead(); }
  }
  launcher.addEventListener("click", function () { toggle(panel.hidden); });
  close.addEventListener("click", function () { toggle(false); launcher.focus(); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !panel.hidden) toggle(false); });
  document.addEventListener("visibilitychange", markRead);

  function start() { document.body.appendChild(root); connect(); }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
  window.ThreadlineChat = { open: function () { toggle(true); }, close: function () { toggle(false); } };
})();
