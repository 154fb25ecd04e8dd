"""XEP-0363 HTTP upload without a server: the URL tokens and their key, the options' checks, the
file store's quota and clean-up, and what a request path may name."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from imactor.modules.http_upload import Options, acceptable_name, parse_path, tokens
from imactor.modules.http_upload.store import Slot, UploadStore, new_slot_id
from imactor.server.module_host import ModuleHost
from imactor.server.modules import ModuleConfigError

KEY = b"k" * 32
FACTS = ("AbCdEfGhIjKlMnOpQrStUv", "photo.jpg", 1234, "image/jpeg", 1_900_000_000)


# ---- tokens ----------------------------------------------------------------------------------


def test_a_token_is_valid_for_its_slot_and_expiry_only() -> None:
    token = tokens.sign(KEY, *FACTS)
    assert tokens.valid(KEY, token, *FACTS)
    changed = [
        ("AbCdEfGhIjKlMnOpQrStUw", *FACTS[1:]),  # another slot
        (FACTS[0], "photo.jpeg", *FACTS[2:]),  # another name
        (*FACTS[:2], 1235, *FACTS[3:]),  # another size
        (*FACTS[:3], "text/html", FACTS[4]),  # another type
        (*FACTS[:4], FACTS[4] + 1),  # a later expiry
    ]
    for facts in changed:
        assert not tokens.valid(KEY, token, *facts), facts
    assert not tokens.valid(b"another key" * 3, token, *FACTS)
    assert not tokens.valid(KEY, token[:-1], *FACTS)
    assert not tokens.valid(KEY, "é" + token[1:], *FACTS)  # not even ASCII: refused, no exception
    assert not tokens.valid(KEY, "", *FACTS)


def test_fields_cannot_shift_into_each_other() -> None:
    """A NUL separates the signed fields, so "ab" + "c" never signs like "a" + "bc"."""
    assert tokens.slot_message("s", "a.txt", 12, "t/x", 5) != tokens.slot_message("s", "a.txt1", 2, "t/x", 5)
    assert tokens.sign(KEY, "s", "a.txt", 12, "t/x", 5) != tokens.sign(KEY, "s", "a.txt1", 2, "t/x", 5)


def test_the_key_is_generated_once_private_and_shared(tmp_path: Path) -> None:
    directory = tmp_path / "uploads"
    key = tokens.load_or_create_key(directory)
    assert len(key) == 32
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "secret").stat().st_mode) == 0o600
    assert tokens.load_or_create_key(directory) == key
    assert [p.name for p in directory.iterdir()] == ["secret"]  # no temporary file left


def test_workers_creating_the_key_at_once_agree(tmp_path: Path) -> None:
    directory = tmp_path / "uploads"
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        keys.append(tokens.load_or_create_key(directory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert [p.name for p in directory.iterdir()] == ["secret"]


# ---- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_file_size": 0}, "modules.http_upload.max_file_size: expected a positive integer"),
        ({"max_file_size": "big"}, "modules.http_upload.max_file_size: expected int"),
        ({"quota": -1}, "modules.http_upload.quota: expected 0 (none) or a positive number"),
        ({"expire_days": -2.5}, "modules.http_upload.expire_days: expected 0 (none) or a positive number"),
        ({"slot_ttl": -1}, "modules.http_upload.slot_ttl: expected a positive integer"),
        ({"cleanup_interval": 0}, "modules.http_upload.cleanup_interval: expected a positive number"),
        ({"subdomain": "Up Load"}, "modules.http_upload.subdomain: expected a DNS label"),
        ({"http_path": "upload"}, "modules.http_upload.http_path: expected a path that starts and ends"),
        ({"url": "ftp://files"}, "modules.http_upload.url: expected an http(s) URL ending with /"),
        ({"users": ["alice"]}, "modules.http_upload.users: expected a list of bare JIDs"),
        ({"users": "alice@example.com"}, "modules.http_upload.users: expected a list of bare JIDs"),
        ({"path": 3}, "modules.http_upload.path: expected str"),
        ({"colour": "red"}, "modules.http_upload.colour: unknown key"),
    ],
)
def test_bad_options_name_the_file_and_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ModuleConfigError) as caught:
        ModuleHost(["http_upload"], {"http_upload": raw}, "conf/imactor.toml")
    assert str(caught.value).startswith(f"conf/imactor.toml: {message}"), caught.value


def test_the_defaults_and_a_service_under_the_domain() -> None:
    host = ModuleHost(["http_upload"], {"http_upload": {"users": ["Alice@Example.com"]}}, "f.toml")
    options = host.options("http_upload")
    assert (options.max_file_size, options.quota, options.max_age) == (100 << 20, 1 << 30, 30 * 86400)
    assert options.users == frozenset({"alice@example.com"})
    assert [service.domain for service in host.services("example.com")] == ["upload.example.com"]
    route = host.http_route("/upload/AbCdEfGhIjKlMnOpQrStUv/a.txt")
    assert route is not None
    assert route.prefix == "/upload/"
    assert host.http_route("/http-bind") is None
    assert Options(expire_days=0).max_age is None


# ---- names and paths -------------------------------------------------------------------------


def test_file_names_are_one_printable_segment() -> None:
    for name in ("photo.jpg", "Ünïcode name (1).tar.gz", ".hidden", "a..b", "x" * 255):
        assert acceptable_name(name), name
    for name in ("", ".", "..", "a/b", "a\\b", "../x", "a\0b", "tab\t", "new\nline", "del\x7f", "é" * 128):
        assert not acceptable_name(name), name


def test_a_path_names_a_slot_and_a_file_or_nothing() -> None:
    assert parse_path("/upload/AbCdEfGhIjKlMnOpQrStUv/my%20photo.jpg", "/upload/") == (
        "AbCdEfGhIjKlMnOpQrStUv", "my photo.jpg")  # fmt: skip
    slot_id = "AbCdEfGhIjKlMnOpQrStUv"
    # A name is only compared with the slot's, never used as a path: this one finds no file.
    assert parse_path(f"/upload/{slot_id}/..%2F..%2Fsecret", "/upload/") == (slot_id, "../../secret")
    for path in ("/upload/", f"/upload/{slot_id}", f"/upload/{slot_id}/", "/upload/../x", "/upload/a/b/c",
                 "/upload//x", f"/upload/{slot_id}/%ff", f"/upload/{slot_id}%2F..%2F/x", "/upload/id/x.txt",
                 f"/upload/{slot_id}/a/b"):  # fmt: skip
        assert parse_path(path, "/upload/") is None, path


# ---- the store -------------------------------------------------------------------------------


def slot_of(owner: str, size: int, *, created: float, put_expires: int) -> Slot:
    return Slot(new_slot_id(), owner, "f.bin", size, "application/octet-stream", created, put_expires)


def upload(store: UploadStore, slot: Slot) -> None:
    fd = store.open_part(slot.slot_id)
    with open(fd, "wb") as f:
        f.write(b"x" * slot.size)
    assert store.commit(slot.slot_id)


def test_the_quota_counts_stored_files_and_open_slots(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "up", max_age=1000.0)
    stored = slot_of("a@x", 10, created=100.0, put_expires=160)
    open_slot = slot_of("a@x", 20, created=150.0, put_expires=210)
    closed = slot_of("a@x", 40, created=50.0, put_expires=110)  # never uploaded, its URL expired
    other = slot_of("b@x", 80, created=150.0, put_expires=210)
    for slot in (stored, open_slot, closed, other):
        store.reserve(slot)
    upload(store, stored)
    usage = store.usage("a@x", now=200.0)
    assert usage.used == 30
    assert usage.frees_at == 210  # the open slot closes before the file expires (1100)
    assert store.usage("a@x", now=300.0).used == 10
    assert store.usage("nobody@x", now=0.0).used == 0
    assert stat.S_IMODE((store.root / stored.slot_id).stat().st_mode) == 0o700
    assert stat.S_IMODE(store.data_path(stored.slot_id).stat().st_mode) == 0o600


def test_a_slot_is_uploaded_once(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "up", max_age=None)
    slot = slot_of("a@x", 3, created=0.0, put_expires=60)
    store.reserve(slot)
    fd = store.open_part(slot.slot_id)
    with pytest.raises(FileExistsError):  # a second PUT while the first writes
        store.open_part(slot.slot_id)
    with open(fd, "wb") as f:
        f.write(b"abc")
    assert store.commit(slot.slot_id)
    with open(store.open_part(slot.slot_id), "wb") as f:
        f.write(b"xyz")
    assert not store.commit(slot.slot_id)  # a later one finds the file there
    assert store.data_path(slot.slot_id).read_bytes() == b"abc"
    assert not (store.root / slot.slot_id / "data.part").exists()


def test_the_sweep_removes_expired_files_and_abandoned_slots_only(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "up", max_age=100.0)
    old_file = slot_of("a@x", 1, created=0.0, put_expires=60)
    new_file = slot_of("a@x", 1, created=150.0, put_expires=210)
    abandoned = slot_of("a@x", 1, created=0.0, put_expires=60)
    waiting = slot_of("a@x", 1, created=150.0, put_expires=210)
    for slot in (old_file, new_file, abandoned, waiting):
        store.reserve(slot)
    upload(store, old_file)
    upload(store, new_file)
    (store.root / "not-a-slot").mkdir()
    assert store.sweep(200.0, abandoned_after=100.0) == 2
    assert store.slot(old_file.slot_id) is None
    assert store.slot(abandoned.slot_id) is None
    assert store.slot(new_file.slot_id) == new_file
    assert store.slot(waiting.slot_id) == waiting
    assert (store.root / "not-a-slot").exists()  # the sweep touches nothing it did not make
    marks = {p.name for p in (store.root / "owners").rglob("*") if p.is_file()}
    assert marks == {new_file.slot_id, waiting.slot_id}
    assert UploadStore(tmp_path / "missing", max_age=1.0).sweep(0.0, abandoned_after=0.0) == 0


def test_a_slot_id_that_is_not_one_finds_nothing(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "up", max_age=None)
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "meta.json").write_text("{}")
    for name in ("..", "../up", "owners", "", "AbCdEfGhIjKlMnOpQrStU/", "AbCdEfGhIjKlMnOpQrStUvw"):
        assert store.slot(name) is None
