"""kvshm: a shared-memory key-value store for the processes of one machine.

Processes (multiprocessing workers, gunicorn/uwsgi workers, Celery tasks, any other language
through the C ABI) share a store by name: every put/get/remove goes straight to shared memory,
atomically, visible to every process at once. A store is created by a host (the ``kvhost``
daemon, or :class:`Host` here) and kept until it is released.

Keys and values are ``bytes`` (``str`` is accepted and stored as UTF-8); values come back as
``bytes``. Errors are :class:`Error` subclasses.

>>> import kvshm
>>> host = kvshm.Host.create("example")            # or run `kvhost --name example`
>>> c = kvshm.Client("example")
>>> c.put(b"k", b"v"); c.get(b"k")
b'v'
>>> host.release()

Fork safety: a :class:`Client` belongs to the process that opened it. In a child made by
``os.fork()`` its calls raise :class:`Forked`; open a new one in the child. A Client pickles as
its store name, so ``multiprocessing`` (fork, spawn, forkserver) can pass one to workers, which
reopen it.
"""

from collections.abc import MutableMapping

from ._kvshm import (  # noqa: F401
    AlreadyExists,
    BadSnapshot,
    BatchTooLarge,
    Busy,
    Client,
    Conflict,
    Corrupt,
    Error,
    Forked,
    Host,
    HostRunning,
    Incompatible,
    InvalidArgument,
    IoError,
    KeyTooLong,
    NotAnInteger,
    NotFound,
    Overflow,
    ReadOnly,
    PermissionDenied,
    StoreFull,
    TooManyClients,
    ValueTooLong,
)

__all__ = [
    "Client",
    "Host",
    "Store",
    "Error",
    "AlreadyExists",
    "BadSnapshot",
    "BatchTooLarge",
    "Busy",
    "Conflict",
    "Corrupt",
    "Forked",
    "HostRunning",
    "Incompatible",
    "InvalidArgument",
    "IoError",
    "KeyTooLong",
    "NotAnInteger",
    "NotFound",
    "Overflow",
    "ReadOnly",
    "PermissionDenied",
    "StoreFull",
    "TooManyClients",
    "ValueTooLong",
]


class Store(MutableMapping):
    """A dict-like view of a store: ``store[b"k"] = b"v"``, ``store[b"k"]``, ``b"k" in store``,
    ``del store[b"k"]``, ``len(store)``, iteration over the keys (a snapshot per stripe, not of
    the whole store). Missing keys raise ``KeyError``.

    ``Store("name")`` opens a :class:`Client`; ``Store(client)`` wraps one.
    """

    def __init__(self, name_or_client, dir=None, read_only=False):
        if isinstance(name_or_client, Client):
            self.client = name_or_client
        else:
            self.client = Client(name_or_client, dir=dir, read_only=read_only)

    def __getitem__(self, key):
        v = self.client.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __setitem__(self, key, value):
        self.client.put(key, value)

    def __delitem__(self, key):
        if not self.client.remove(key):
            raise KeyError(key)

    def __contains__(self, key):
        return self.client.contains(key)

    def __iter__(self):
        return iter(self.client.keys())

    def __len__(self):
        return len(self.client)

    def __repr__(self):
        return f"kvshm.Store({self.client!r})"
