//! `kvshm._kvshm`: the Python extension (PyO3, abi3 for CPython 3.8+). It calls the Rust
//! library directly; `python/kvshm/__init__.py` re-exports it and adds the `Store` mapping view.
//!
//! Keys and values are `bytes` (or `str`, taken as UTF-8; `bytearray`/`memoryview` too);
//! values come back as `bytes`, copied (never a view of shared memory). Errors are
//! `kvshm.Error` subclasses, one per library error kind. Calls that can wait (`wait_changed`,
//! `verify`, snapshots) release the GIL; the others are a few hundred nanoseconds and keep it.
#![forbid(unsafe_code)]

use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use kvshm::{ErrorCode, Ttl, WaitResult};

create_exception!(
    _kvshm,
    Error,
    PyException,
    "Base class of every kvshm error."
);
create_exception!(
    _kvshm,
    KeyTooLong,
    Error,
    "The key is longer than the store allows."
);
create_exception!(
    _kvshm,
    ValueTooLong,
    Error,
    "The value is longer than the store allows."
);
create_exception!(
    _kvshm,
    StoreFull,
    Error,
    "The store is full; nothing stored was lost."
);
create_exception!(_kvshm, NotFound, Error, "No store of that name exists.");
create_exception!(
    _kvshm,
    AlreadyExists,
    Error,
    "A store of that name already exists."
);
create_exception!(
    _kvshm,
    HostRunning,
    Error,
    "Another host already serves the store."
);
create_exception!(
    _kvshm,
    Incompatible,
    Error,
    "Not a store of this build's layout."
);
create_exception!(
    _kvshm,
    Corrupt,
    Error,
    "The store holds a value that cannot be right."
);
create_exception!(
    _kvshm,
    PermissionDenied,
    Error,
    "The store file may not be opened."
);
create_exception!(
    _kvshm,
    Busy,
    Error,
    "A read-only client found no consistent view."
);
create_exception!(
    _kvshm,
    BadSnapshot,
    Error,
    "A damaged or foreign snapshot file."
);
create_exception!(
    _kvshm,
    BatchTooLarge,
    Error,
    "A batch too large for one transaction."
);
create_exception!(
    _kvshm,
    TooManyClients,
    Error,
    "Every client slot is in use."
);
create_exception!(
    _kvshm,
    Forked,
    Error,
    "This Client was opened by the parent of this process: open a new one."
);
create_exception!(
    _kvshm,
    Conflict,
    Error,
    "A conditional write found another version (attributes: index, current)."
);
create_exception!(
    _kvshm,
    NotAnInteger,
    Error,
    "incr of a value that is not an integer."
);
create_exception!(
    _kvshm,
    Overflow,
    Error,
    "incr would overflow a signed 64-bit integer."
);
create_exception!(
    _kvshm,
    ReadOnly,
    Error,
    "The store is a read-only replica: write to its primary."
);
create_exception!(_kvshm, InvalidArgument, Error, "A bad argument.");
create_exception!(_kvshm, IoError, Error, "An operating-system error.");

/// The Python exception of a library error (`Conflict` carries `index` and `current`).
fn err(e: kvshm::Error) -> PyErr {
    let msg = e.to_string();
    let pe = match e.code() {
        ErrorCode::KeyTooLong => KeyTooLong::new_err(msg),
        ErrorCode::ValueTooLong => ValueTooLong::new_err(msg),
        ErrorCode::StoreFull => StoreFull::new_err(msg),
        ErrorCode::NotFound => NotFound::new_err(msg),
        ErrorCode::AlreadyExists => AlreadyExists::new_err(msg),
        ErrorCode::HostRunning => HostRunning::new_err(msg),
        ErrorCode::Incompatible => Incompatible::new_err(msg),
        ErrorCode::Corrupt => Corrupt::new_err(msg),
        ErrorCode::PermissionDenied => PermissionDenied::new_err(msg),
        ErrorCode::Busy => Busy::new_err(msg),
        ErrorCode::BadSnapshot => BadSnapshot::new_err(msg),
        ErrorCode::BatchTooLarge | ErrorCode::TxnLogFull => BatchTooLarge::new_err(msg),
        ErrorCode::TooManyClients => TooManyClients::new_err(msg),
        ErrorCode::Forked => Forked::new_err(msg),
        ErrorCode::Conflict => Conflict::new_err(msg),
        ErrorCode::NotAnInteger => NotAnInteger::new_err(msg),
        ErrorCode::Overflow => Overflow::new_err(msg),
        ErrorCode::ReadOnly => ReadOnly::new_err(msg),
        ErrorCode::InvalidArgument => InvalidArgument::new_err(msg),
        ErrorCode::Io => IoError::new_err(msg),
    };
    if let kvshm::Error::Conflict { index, current } = e {
        Python::with_gil(|py| {
            let v = pe.value(py);
            let _ = v.setattr("index", index);
            let _ = v.setattr("current", current);
        });
    }
    pe
}

/// Bytes of a key or value argument: `bytes`, `str` (UTF-8), or any buffer (`bytearray`,
/// `memoryview`).
fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(s.extract::<String>()?.into_bytes());
    }
    // bytearray, memoryview, other sequences of ints.
    obj.extract::<Vec<u8>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected bytes or str, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })
}

fn secs(d: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(d)
        .map_err(|_| InvalidArgument::new_err(format!("bad duration {d}")))
}

/// A process's attachment to a store: `Client(name, dir=None, read_only=False)`.
///
/// Every call is atomic and visible to every process at once. A `Client` belongs to the
/// process that opened it: in a child made by `os.fork()` its calls raise `kvshm.Forked`; open
/// a new one there. Pickling sends the name (so `multiprocessing` with spawn or forkserver
/// reopens it in the worker).
#[pyclass(module = "kvshm._kvshm", frozen)]
struct Client {
    inner: kvshm::Client,
    name: String,
    dir: Option<String>,
    read_only: bool,
}

/// What `Client(...)` is called with: how a pickled Client is reopened.
type OpenArgs = (String, Option<String>, bool);

fn open(name: &str, dir: Option<&str>, read_only: bool) -> kvshm::Result<kvshm::Client> {
    let dir = dir.map_or_else(kvshm::default_dir, Into::into);
    if read_only {
        kvshm::Client::open_read_only_in(dir, name)
    } else {
        kvshm::Client::open_in(dir, name)
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (name, dir=None, read_only=false))]
    fn new(name: String, dir: Option<String>, read_only: bool) -> PyResult<Self> {
        let inner = open(&name, dir.as_deref(), read_only).map_err(err)?;
        Ok(Client {
            inner,
            name,
            dir,
            read_only,
        })
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(PyObject, OpenArgs)> {
        let me = slf.get();
        Ok((
            slf.get_type().into_any().unbind(),
            (me.name.clone(), me.dir.clone(), me.read_only),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "kvshm.Client({:?}{})",
            self.name,
            if self.read_only {
                ", read_only=True"
            } else {
                ""
            }
        )
    }

    /// The store's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key` as bytes, or None.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let k = bytes_of(key)?;
        Ok(self
            .inner
            .get(&k)
            .map_err(err)?
            .map(|v| PyBytes::new(py, &v)))
    }

    /// Store `value` under `key`; with `ttl` (seconds) the key expires for every process.
    #[pyo3(signature = (key, value, ttl=None))]
    fn put(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        let (k, v) = (bytes_of(key)?, bytes_of(value)?);
        match ttl {
            Some(t) => self.inner.put_with_ttl(&k, &v, secs(t)?),
            None => self.inner.put(&k, &v),
        }
        .map_err(err)
    }

    /// Remove `key`; True if it was present.
    fn remove(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.inner.remove(&bytes_of(key)?).map_err(err)
    }

    /// Whether `key` is present.
    fn contains(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.inner.contains(&bytes_of(key)?).map_err(err)
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    /// The values of `keys` (None for missing ones), as one consistent snapshot.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let ks = keys.iter().map(bytes_of).collect::<PyResult<Vec<_>>>()?;
        Ok(self
            .inner
            .get_many(&ks)
            .map_err(err)?
            .into_iter()
            .map(|v| v.map(|v| PyBytes::new(py, &v)))
            .collect())
    }

    /// Store every (key, value) pair (a dict or an iterable of pairs), all or nothing.
    fn put_many(&self, items: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = match items.downcast::<PyDict>() {
            Ok(d) => d.items().into_any(),
            Err(_) => items.clone(),
        };
        let mut pairs = Vec::new();
        for it in items.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = it?.extract()?;
            pairs.push((bytes_of(&k)?, bytes_of(&v)?));
        }
        self.inner.put_many(&pairs).map_err(err)
    }

    /// Remove `keys` atomically; returns how many existed.
    fn remove_many(&self, keys: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let ks = keys.iter().map(bytes_of).collect::<PyResult<Vec<_>>>()?;
        self.inner.remove_many(&ks).map_err(err)
    }

    /// Every key starting with `prefix` (unordered).
    #[pyo3(signature = (prefix=None))]
    fn keys<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let p = prefix.map(bytes_of).transpose()?.unwrap_or_default();
        Ok(self
            .inner
            .keys(&p)
            .map_err(err)?
            .iter()
            .map(|k| PyBytes::new(py, k))
            .collect())
    }

    /// (key, value) pairs of the keys starting with `prefix`, each stripe a consistent view.
    #[pyo3(signature = (prefix=None))]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = prefix.map(bytes_of).transpose()?.unwrap_or_default();
        let mut out = Vec::new();
        self.inner
            .scan(&p, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                true
            })
            .map_err(err)?;
        let list: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = out
            .iter()
            .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
            .collect();
        list.into_pyobject(py)?.try_iter().map(|i| i.into_any())
    }

    /// Store metrics as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("keys", s.keys)?;
        d.set_item("value_bytes", s.value_bytes)?;
        d.set_item("committed_bytes", s.committed_bytes)?;
        d.set_item("used_bytes", s.used_bytes)?;
        d.set_item("free_bytes", s.free_bytes)?;
        d.set_item("returned_bytes", s.returned_bytes)?;
        d.set_item("max_bytes", s.max_bytes)?;
        d.set_item("gets", s.gets)?;
        d.set_item("hits", s.hits)?;
        d.set_item("puts", s.puts)?;
        d.set_item("removes", s.removes)?;
        d.set_item("clients", s.clients.len())?;
        d.set_item("recoveries", s.recoveries)?;
        d.set_item("growths", s.growths)?;
        d.set_item("revision", s.revision)?;
        d.set_item("expired", s.expired)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("eviction", s.eviction.name())?;
        d.set_item("host_pid", s.host_pid)?;
        Ok(d)
    }

    /// Full integrity check (recovers dead clients first): the list of problems, empty when
    /// the store is healthy. Releases the GIL.
    fn verify(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let r = py.allow_threads(|| self.inner.verify()).map_err(err)?;
        Ok(r.problems)
    }

    /// (value, version) of `key`, or None.
    fn get_versioned<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, u64)>> {
        Ok(self
            .inner
            .get_versioned(&bytes_of(key)?)
            .map_err(err)?
            .map(|(v, ver)| (PyBytes::new(py, &v), ver)))
    }

    /// The version of `key`, or None.
    fn version(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        self.inner.version(&bytes_of(key)?).map_err(err)
    }

    /// Store only if the key's version is `expected` (None: only if absent); returns the new
    /// version, or raises `kvshm.Conflict` (with `.current`).
    #[pyo3(signature = (key, value, expected))]
    fn put_if_version(
        &self,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        expected: Option<u64>,
    ) -> PyResult<u64> {
        self.inner
            .put_if_version(&bytes_of(key)?, &bytes_of(value)?, expected)
            .map_err(err)
    }

    /// Remove only if the key's version is `expected`; `kvshm.Conflict` otherwise.
    fn remove_if_version(&self, key: &Bound<'_, PyAny>, expected: u64) -> PyResult<()> {
        self.inner
            .remove_if_version(&bytes_of(key)?, expected)
            .map_err(err)
    }

    /// Store only if absent; True if stored.
    fn put_if_absent(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.inner
            .put_if_absent(&bytes_of(key)?, &bytes_of(value)?)
            .map_err(err)
    }

    /// Store only if present; True if stored.
    fn replace(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.inner
            .replace(&bytes_of(key)?, &bytes_of(value)?)
            .map_err(err)
    }

    /// Store and return the previous value (or None), atomically.
    fn get_and_put<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self
            .inner
            .get_and_put(&bytes_of(key)?, &bytes_of(value)?)
            .map_err(err)?
            .map(|v| PyBytes::new(py, &v)))
    }

    /// Remove and return the value (or None), atomically.
    fn get_and_remove<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self
            .inner
            .get_and_remove(&bytes_of(key)?)
            .map_err(err)?
            .map(|v| PyBytes::new(py, &v)))
    }

    /// Add `delta` to the decimal integer under `key` (missing: 0); returns the result.
    #[pyo3(signature = (key, delta=1))]
    fn incr(&self, key: &Bound<'_, PyAny>, delta: i64) -> PyResult<i64> {
        self.inner.incr(&bytes_of(key)?, delta).map_err(err)
    }

    /// Append to the value of `key` (missing: empty); returns the new length.
    fn append(&self, key: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.inner
            .append(&bytes_of(key)?, &bytes_of(data)?)
            .map_err(err)
    }

    /// All or nothing: if every `(key, version or None)` check holds, store `puts` and remove
    /// `removes`; else `kvshm.Conflict` (`.index` names the failed check).
    #[pyo3(signature = (checks, puts=Vec::new(), removes=Vec::new()))]
    fn commit_if(
        &self,
        checks: Vec<(Bound<'_, PyAny>, Option<u64>)>,
        puts: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
        removes: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let c = checks
            .iter()
            .map(|(k, v)| Ok((bytes_of(k)?, *v)))
            .collect::<PyResult<Vec<_>>>()?;
        let p = puts
            .iter()
            .map(|(k, v)| Ok((bytes_of(k)?, bytes_of(v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let r = removes.iter().map(bytes_of).collect::<PyResult<Vec<_>>>()?;
        self.inner.commit_if(&c, &p, &r).map_err(err)
    }

    /// Wait (sleeping, GIL released) until the version of `key` is no longer `since`
    /// (None: until it exists), at most `timeout` seconds. Returns (changed, version).
    #[pyo3(signature = (key, since, timeout))]
    fn wait_changed(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        since: Option<u64>,
        timeout: f64,
    ) -> PyResult<(bool, Option<u64>)> {
        let k = bytes_of(key)?;
        let t = secs(timeout)?;
        let r = py
            .allow_threads(|| self.inner.wait_changed(&k, since, t))
            .map_err(err)?;
        Ok(match r {
            WaitResult::Changed(v) => (true, v),
            WaitResult::Timeout => (false, since),
        })
    }

    /// Make `key` expire after `ttl` seconds; False if it is missing.
    fn expire(&self, key: &Bound<'_, PyAny>, ttl: f64) -> PyResult<bool> {
        self.inner.expire(&bytes_of(key)?, secs(ttl)?).map_err(err)
    }

    /// Remove the expiry of `key`; True if it had one.
    fn persist(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.inner.persist(&bytes_of(key)?).map_err(err)
    }

    /// The store's eviction policy (Redis's names: "noeviction", "allkeys-lru", ...).
    #[getter]
    fn get_eviction(&self) -> String {
        self.inner.eviction().name().to_string()
    }

    /// Set the store's eviction policy, for every process using it.
    #[setter]
    fn set_eviction(&self, policy: &str) -> PyResult<()> {
        let p: kvshm::Policy = policy.parse().map_err(err)?;
        self.inner.set_eviction(p).map_err(err)
    }

    /// Seconds `key` has to live: None when missing (or expired), -1.0 when it does not expire.
    fn ttl(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        Ok(match self.inner.ttl(&bytes_of(key)?).map_err(err)? {
            Ttl::Missing => None,
            Ttl::Persistent => Some(-1.0),
            Ttl::Remaining(d) => Some(d.as_secs_f64()),
        })
    }
}

/// The owner of a store: `Host.create(name, ...)` makes one, `Host.open_existing(name)`
/// adopts one after a restart. The store lives until `release()` (closing a Host keeps it).
/// Normally the `kvhost` daemon is the host; this is for tests and single-program setups.
#[pyclass(module = "kvshm._kvshm")]
struct Host {
    inner: Option<kvshm::Host>,
    name: String,
    dir: Option<String>,
}

impl Host {
    fn host(&self) -> PyResult<&kvshm::Host> {
        self.inner
            .as_ref()
            .ok_or_else(|| InvalidArgument::new_err("the host was released"))
    }
}

#[pymethods]
impl Host {
    /// Create store `name` (fails with `AlreadyExists`). Sizes in bytes.
    #[staticmethod]
    #[pyo3(signature = (name, dir=None, max_size=None, initial_size=None, max_key_len=None, max_value_len=None, stripes=None))]
    fn create(
        name: String,
        dir: Option<String>,
        max_size: Option<u64>,
        initial_size: Option<u64>,
        max_key_len: Option<usize>,
        max_value_len: Option<usize>,
        stripes: Option<u32>,
    ) -> PyResult<Host> {
        let mut cfg = kvshm::Config::default();
        if let Some(d) = &dir {
            cfg = cfg.dir(d);
        }
        if let Some(v) = max_size {
            cfg = cfg.max_size(v);
        }
        if let Some(v) = initial_size {
            cfg = cfg.initial_size(v);
        }
        if let Some(v) = max_key_len {
            cfg = cfg.max_key_len(v);
        }
        if let Some(v) = max_value_len {
            cfg = cfg.max_value_len(v);
        }
        if let Some(v) = stripes {
            cfg = cfg.stripes(v);
        }
        let h = kvshm::Host::create(&name, &cfg).map_err(err)?;
        Ok(Host {
            inner: Some(h),
            name,
            dir,
        })
    }

    /// Adopt an existing store whose host is gone (recovers dead clients first).
    #[staticmethod]
    #[pyo3(signature = (name, dir=None))]
    fn open_existing(name: String, dir: Option<String>) -> PyResult<Host> {
        let d = dir.clone().map_or_else(kvshm::default_dir, Into::into);
        let h = kvshm::Host::open_existing_in(d, &name).map_err(err)?;
        Ok(Host {
            inner: Some(h),
            name,
            dir,
        })
    }

    /// A new `Client` of this store.
    fn client(&self) -> PyResult<Client> {
        self.host()?;
        Client::new(self.name.clone(), self.dir.clone(), false)
    }

    /// One housekeeping pass (recover dead clients, free expired keys, give memory back):
    /// what `kvhost` runs every 100 ms. Returns the number of expired keys freed.
    fn housekeeping(&self, py: Python<'_>) -> PyResult<u64> {
        let h = self.host()?;
        let mut cursor = 0usize;
        let r = py
            .allow_threads(|| h.housekeeping(&mut cursor, 0))
            .map_err(err)?;
        Ok(r.expired)
    }

    /// Remove the store for good.
    fn release(&mut self) -> PyResult<()> {
        match self.inner.take() {
            Some(h) => h.release().map_err(err),
            None => Ok(()),
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }
}

#[pymodule]
fn _kvshm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Host>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("KeyTooLong", py.get_type::<KeyTooLong>())?;
    m.add("ValueTooLong", py.get_type::<ValueTooLong>())?;
    m.add("StoreFull", py.get_type::<StoreFull>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("HostRunning", py.get_type::<HostRunning>())?;
    m.add("Incompatible", py.get_type::<Incompatible>())?;
    m.add("Corrupt", py.get_type::<Corrupt>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("Busy", py.get_type::<Busy>())?;
    m.add("BadSnapshot", py.get_type::<BadSnapshot>())?;
    m.add("BatchTooLarge", py.get_type::<BatchTooLarge>())?;
    m.add("TooManyClients", py.get_type::<TooManyClients>())?;
    m.add("Forked", py.get_type::<Forked>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("NotAnInteger", py.get_type::<NotAnInteger>())?;
    m.add("Overflow", py.get_type::<Overflow>())?;
    m.add("ReadOnly", py.get_type::<ReadOnly>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    Ok(())
}
