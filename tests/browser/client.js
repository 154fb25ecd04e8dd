// The browser side of tests/browser/test_browser.py: Strophe.js (from npm) as the XMPP client.
// The test calls these functions over the DevTools protocol; what happens is also written into
// the page, so that the screenshot shows it.
"use strict";

const lib = window.Strophe;
const S = lib.Strophe || lib;

function log(line, cls) {
    const item = document.createElement("li");
    item.textContent = line;
    if (cls) item.className = cls;
    document.getElementById("log").appendChild(item);
}

const clients = {};

window.imactorTest = {
    // Log in over `service` (ws:// → RFC 7395, http:// → BOSH); resolves with the bound JID.
    connect(name, service, jid, password) {
        return new Promise((resolve, reject) => {
            const conn = new S.Connection(service);
            const client = { conn, received: [] };
            clients[name] = client;
            conn.addHandler((stanza) => {
                const body = stanza.getElementsByTagName("body")[0];
                if (body) {
                    const text = S.getText(body);
                    client.received.push({ from: stanza.getAttribute("from"), body: text });
                    log(`${name} received from ${stanza.getAttribute("from")}: ${text}`, "in");
                }
                return true;
            }, null, "message");
            conn.connect(jid, password, (status, condition) => {
                if (status === S.Status.CONNECTED) {
                    conn.send(new S.Builder("presence"));
                    log(`${name}: logged in as ${conn.jid} over ${service}`, "ok");
                    resolve(conn.jid);
                } else if ([S.Status.AUTHFAIL, S.Status.CONNFAIL, S.Status.ERROR].includes(status)) {
                    log(`${name}: failed (${status} ${condition || ""})`, "error");
                    reject(new Error(`status ${status} ${condition || ""}`));
                }
            });
        });
    },

    send(name, to, text) {
        const message = new S.Builder("message", { to, type: "chat", id: `m${Date.now()}` });
        message.c("body").t(text);
        clients[name].conn.send(message);
        log(`${name} sent to ${to}: ${text}`, "out");
        return true;
    },

    // Resolves with the first message received by `name` whose body is `text`.
    waitFor(name, text) {
        return new Promise((resolve) => {
            const check = () => {
                const found = clients[name].received.find((m) => m.body === text);
                if (found) resolve(found);
                else setTimeout(check, 50);
            };
            check();
        });
    },

    disconnect(name) {
        return new Promise((resolve) => {
            const conn = clients[name].conn;
            conn.connect_callback = (status) => {
                if (status === S.Status.DISCONNECTED) resolve(true);
            };
            conn.disconnect("done");
            setTimeout(() => resolve(false), 3000);
        });
    },
};
