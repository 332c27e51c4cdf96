//! Handles: ids into a registry, never pointers. A handle is `index + 1 | generation << 32`,
//! so a closed, double-closed or made-up handle is detected and refused.

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
    Client(Arc<Client>),
    Host(Arc<Host>),
}

impl Entry {
    pub(crate) fn client(&self) -> &Client {
        match self {
            Entry::Client(c) => c,
            Entry::Host(h) => h,
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
    slot.0 = slot.0.wrapping_add(1).max(1);
    slot.1 = Some(Arc::new(e));
    (idx + 1) | (slot.0 as usize) << 32
}

pub(crate) fn lookup(h: usize) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let (g, e) = r.slots.get(idx)?;
    (*g == generation).then(|| e.clone()).flatten()
}

pub(crate) fn unregister(h: usize) -> Option<Arc<Entry>> {
    let idx = (h & 0xffff_ffff).checked_sub(1)?;
    let generation = (h >> 32) as u32;
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let slot = r.slots.get_mut(idx)?;
    if slot.0 != generation {
        return None;
    }
    let e = slot.1.take()?;
    r.free.push(idx);
    Some(e)
}

pub(crate) fn with_client(
    h: *const kvshm_client,
    f: impl FnOnce(&Client) -> kvshm_status,
) -> kvshm_status {
    guard(|| match lookup(h as usize) {
        Some(e) => f(e.client()),
        None => invalid("unknown or closed client handle"),
    })
}
