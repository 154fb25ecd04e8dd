"""The web admin console (``[listen.console]``, docs/console.md), served by the node supervisor.

- `imactor.web.console_server` (only `imactor.web` speaks HTTP): the listener (h11 on Trio, TLS
  when configured): one request per connection; bounded head, body and time; networks checked.
- `app`: routing, login and logout, sessions and CSRF tokens, the pages' dispatch.
- `auth`: who may log in (the server's admins, against their stored SCRAM verifiers), the
  sessions in memory, the login throttle.
- `pages/`: one module per page (overview, accounts, departments, word lists, announcements,
  reminders), each a view and its changes over the stores and commands the CLI and the XEP-0133
  commands use.
- `html`: the page frame, forms, escaping, and the stylesheet.

The console reaches the node only through `NodeAccess`: the status document, the status
socket's commands (forwarded to the workers by the node supervisor) and the storage.
"""
