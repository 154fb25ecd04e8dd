// The test's hooks into the Converse.js page of tests/browser/test_browser.py, loaded after
// dist/converse.min.js (both ES modules, run in order before the load event). The user's actions
// (typing the JID and password into the login form, typing a message and pressing Enter) come from
// the test as real keyboard input over the DevTools protocol; these functions start Converse, wait
// for what its UI shows, and read it back.
// Every wait is on a DOM (or connection) condition, bounded: a failure names what never appeared.
"use strict";

(function () {
    const WAIT_MS = 30000;
    let api = null; // Converse's API, handed to our plugin (the documented way for tests)
    let omemoReady = false; // Converse published its OMEMO device and keys (PEP), on a trusted device
    const chatModels = {}; // bare JID: the chat's model (Backbone-like), as api.chats.open gave it

    function waitFor(what, find, timeoutMs = WAIT_MS) {
        return new Promise((resolve, reject) => {
            const deadline = Date.now() + timeoutMs;
            const observer = new MutationObserver(check);
            const timer = setInterval(check, 100); // also catches changes a mutation does not signal
            function done() {
                observer.disconnect();
                clearInterval(timer);
            }
            function check() {
                const found = find();
                if (found) {
                    done();
                    resolve(found);
                } else if (Date.now() > deadline) {
                    done();
                    reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
                }
            }
            observer.observe(document, { childList: true, subtree: true, characterData: true });
            check();
        });
    }

    function chat(jid) {
        return document.querySelector(`converse-chat[jid="${jid}"]`);
    }

    function messages(jid) {
        const view = chat(jid);
        if (!view) return [];
        return Array.from(view.querySelectorAll(".chat-msg")).map((el) => ({
            from: el.getAttribute("data-from"),
            text: el.querySelector(".chat-msg__text")?.textContent.trim() ?? "",
        }));
    }

    window.imactorTest = {
        // Start Converse with `settings` (the transport's URL among them); resolves once its login
        // form is shown, the JID field focused for the test to type into.
        async start(settings) {
            converse.plugins.add("imactor-test", {
                initialize() {
                    api = this._converse.api;
                    api.listen.on("OMEMOInitialized", () => {
                        omemoReady = true;
                    });
                },
            });
            await converse.initialize({ ...settings, whitelisted_plugins: ["imactor-test"] });
            const field = await waitFor("the login form", () =>
                document.querySelector('converse-login-form input[name="jid"]'),
            );
            field.focus();
            return true;
        },

        focus(selector) {
            const element = document.querySelector(selector);
            if (!element) throw new Error(`no element ${selector}`);
            element.focus();
            return true;
        },

        // Resolves with the full JID the server bound, once Converse is connected and its control
        // box shows the logged-in user (the login form gone). Rejects as soon as the login form
        // shows a failure (refused connection, wrong password...), with Converse's words.
        async loggedIn() {
            const outcome = await waitFor("the connection", () => {
                if (api && api.connection.connected()) return "connected";
                const alert = document.querySelector("converse-login-form .conn-feedback.alert-danger");
                return alert?.textContent.trim() || null;
            });
            if (outcome !== "connected") throw new Error(`login failed: ${outcome}`);
            await waitFor("the logged-in control box", () =>
                document.querySelector("converse-controlbox converse-user-profile, converse-controlbox converse-roster") &&
                !document.querySelector("converse-login-form"),
            );
            return api.connection.get().jid;
        },

        // Open the chat with `jid` (Converse's API: the user would pick a roster contact) and focus
        // its message box; resolves once the box is on screen.
        async openChat(jid) {
            chatModels[jid] = await api.chats.open(jid, {}, true);
            const textarea = await waitFor(`the chat with ${jid}`, () =>
                chat(jid)?.querySelector("textarea.chat-textarea"),
            );
            textarea.focus();
            return true;
        },

        // Resolves with the first message shown in the chat with `jid` whose text is `text`.
        waitForMessage(jid, text) {
            return waitFor(`"${text}" in the chat with ${jid}`, () =>
                messages(jid).find((m) => m.text === text),
            );
        },

        // Resolves with the selector of the chat's file input (Converse's "Choose a file to send"
        // toolbar button clicks it), once shown: Converse shows it after its disco found an
        // XEP-0363 upload service on the user's server.
        async uploadInput(jid) {
            const selector = `converse-chat[jid="${jid}"] converse-chat-toolbar input.fileupload[type="file"]`;
            await waitFor(`the upload button in the chat with ${jid}`, () => document.querySelector(selector));
            return selector;
        },

        // Resolves with {from, src, width, height} of the first image from `from` in the chat with
        // `jid` that the browser loaded from an https: URL (an upload's GET URL), once it has loaded.
        // Rejects at once when the chat gets an error message instead (a failed upload: Converse
        // turns the file's message into one, "Sorry, could not...", shown as the upload's progress
        // a few seconds, then removed; so its model is read, not the DOM).
        async waitForImage(jid, from) {
            const found = await waitFor(`an image from ${from} in the chat with ${jid}`, () => {
                const view = chat(jid);
                const failed = chatModels[jid]?.messages.find((m) => m.get("type") === "error");
                if (failed) return { error: failed.get("message") };
                for (const el of view?.querySelectorAll(`.chat-msg[data-from="${from}"]`) ?? []) {
                    const img = el.querySelector('img[src^="https://"]');
                    if (img && img.complete && img.naturalWidth > 0) {
                        return { from, src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight };
                    }
                }
                return null;
            });
            if (found.error) throw new Error(`Converse shows an error: ${found.error}`);
            return found;
        },

        // Log out the way Converse's own logout button does; resolves once the login form is back.
        // Converse sets up OMEMO in the background after logging in (on a device the login form
        // calls trusted, its default): a logout in the middle of it breaks Converse, so it is
        // awaited first, which also has Converse's PEP publications go through the server.
        async logOut() {
            await waitFor("Converse's OMEMO set-up", () => omemoReady);
            await api.user.logout();
            await waitFor("the login form after logging out", () =>
                document.querySelector('converse-login-form input[name="jid"]'),
            );
            return true;
        },

        messages,
    };
})();
