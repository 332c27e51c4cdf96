//! Handles: ids into a registry, never pointers. A handle is `index + 1 | generation << 32`,
//! so a closed, double-closed or made-up handle is detected and refused. Every entry has a
//! kind: a host handle is refused where a client handle is due and the other way round
//! (nothing is closed by a call that then reports an error). A registry slot whose 32-bit
//! generation is used up is retired instead of wrapping, so an old handle never comes back.

use std::sync::{Arc, Mutex, RwLock};

use kvshm_core::{Client, Host};

use crate::{guard, invalid, kvshm_status};

/// Opaque client handle (an id, never dereferenced; declared, never defined, in C).
#[derive(Debug)]
pub struct kvshm_client {
    _private: [u8; 0],
}

/// Opaque host handle (an id, never dereferenced; declared, never defined, in C).
#[derive(Debug)]
pub struct kvshm_host {
    _private: [u8; 0],
}

pub(crate) enum Entry {
    /// A client handle of its own attachment (`kvshm_client_open*`).
    Client(Arc<Client>),
    /// A client handle that uses a host's attachment (`kvshm_host_client`).
    HostClient(Arc<Host>),
    /// A host handle.
    Host(Arc<Host>),
}

/// What a handle stands for, as the C types say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Host,
}

impl Entry {
    pub(crate) fn client(&self) -> &Client {
        match self {
            Entry::Client(c) => c,
            Entry::HostClient(h) | Entry::Host(h) => h,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Entry::Client(_) | Entry::HostClient(_) => Kind::Client,
            Entry::Host(_) => Kind::Host,
        }
    }
}

#[derive(Default)]
struct Registry {
    slots: Vec<(u32, Option<Arc<Entry>>)>,
    free: Vec<usize>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    slots: Vec::new(),
    free: Vec::new(),
});
static REGISTER: Mutex<()> = Mutex::new(());

pub(crate) fn register(e: Entry) -> usize {
    let _g = REGISTER.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let idx = match r.free.pop() {
        Some(i) => i,
        None => {
            r.slots.push((0, None));
            r.slots.len() - 1
        }
    };
    let slot = &mut r.slots[idx];
    slot.0 += 1; // below u32::MAX: such slots are never freed (see `unregister`)
    slot.1 = Some(Arc::new(e));
    (idx + 1) | (slot.0 as usize) << 32
}

/// The entry of handle `h` if it is open and of kind `kind`.
pub(crate) fn lookup(h: usize, kind: Kind) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let (g, e) = r.slots.get(idx)?;
    (*g == generation)
        .then(|| e.clone())
        .flatten()
        .filter(|e| e.kind() == kind)
}

/// Close handle `h` if it is open and of kind `kind` (otherwise nothing changes).
pub(crate) fn unregister(h: usize, kind: Kind) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let slot = r.slots.get_mut(idx)?;
    if slot.0 != generation || slot.1.as_ref().is_none_or(|e| e.kind() != kind) {
        return None;
    }
    let e = slot.1.take()?;
    // A slot whose generation is used up is retired, never reused: the next generation would
    // wrap and could bring back a handle closed long ago.
    if slot.0 != u32::MAX {
        r.free.push(idx);
    }
    Some(e)
}

pub(crate) fn with_client(
    h: *const kvshm_client,
    f: impl FnOnce(&Client) -> kvshm_status,
) -> kvshm_status {
    guard(|| match lookup(h as usize, Kind::Client) {
        Some(e) => f(e.client()),
        None => invalid("unknown or closed client handle"),
    })
}

#[cfg(test)]
pub(crate) fn set_generation_for_test(h: usize, generation: u32) -> usize {
    let idx = (h & 0xffff_ffff) - 1;
    REGISTRY.write().unwrap().slots[idx].0 = generation;
    (idx + 1) | (generation as usize) << 32
}
