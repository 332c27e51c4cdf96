//! Publish/subscribe on plain channels (SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PUBSUB CHANNELS and
//! NUMSUB), within one kvhost: what Redis Sentinel's hello messages need, and what clients
//! that notify each other through Redis expect. Messages are not stored; a subscriber that
//! falls more than 1024 messages behind loses the oldest (logged), as a slow Redis
//! subscriber is disconnected instead. Patterns (PSUBSCRIBE) are not supported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::proto::{Out, Proto};

/// A published message: channel, payload.
pub type Message = Arc<(Vec<u8>, Vec<u8>)>;

/// The server's channels.
#[derive(Debug)]
pub struct PubSub {
    tx: tokio::sync::broadcast::Sender<Message>,
    /// Subscribers per channel.
    subs: Mutex<BTreeMap<Vec<u8>, usize>>,
}

impl Default for PubSub {
    fn default() -> Self {
        PubSub {
            tx: tokio::sync::broadcast::channel(1024).0,
            subs: Mutex::new(BTreeMap::new()),
        }
    }
}

impl PubSub {
    /// A receiver of every message published from now on.
    pub fn receiver(&self) -> tokio::sync::broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    /// Publish; returns how many subscribers the channel has.
    pub fn publish(&self, channel: &[u8], msg: &[u8]) -> usize {
        let n = self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .copied()
            .unwrap_or(0);
        if n > 0 {
            let _ = self.tx.send(Arc::new((channel.to_vec(), msg.to_vec())));
        }
        n
    }

    fn add(&self, channel: &[u8]) {
        *self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(channel.to_vec())
            .or_default() += 1;
    }

    fn remove(&self, channel: &[u8]) {
        let mut s = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = s.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                s.remove(channel);
            }
        }
    }

    /// Channels with subscribers (PUBSUB CHANNELS), and the count of one (NUMSUB).
    pub fn channels(&self) -> Vec<Vec<u8>> {
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Subscribers of `channel`.
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .copied()
            .unwrap_or(0)
    }
}

/// One connection's subscriptions (removed from the server's counts when dropped).
#[derive(Debug, Default)]
pub struct Subscriptions {
    pub channels: BTreeSet<Vec<u8>>,
    pub server: Option<Arc<PubSub>>,
}

impl Subscriptions {
    /// Subscribe to `channel`; the reply Redis gives.
    pub fn subscribe(&mut self, ps: &Arc<PubSub>, channel: &[u8], out: &mut Out) {
        self.server.get_or_insert_with(|| ps.clone());
        if self.channels.insert(channel.to_vec()) {
            ps.add(channel);
        }
        push_header(out, 3);
        out.bulk(b"subscribe");
        out.bulk(channel);
        out.int(self.channels.len() as i64);
    }

    /// Unsubscribe from `channels` (all when empty).
    pub fn unsubscribe(&mut self, channels: &[&[u8]], out: &mut Out) {
        let list: Vec<Vec<u8>> = if channels.is_empty() {
            self.channels.iter().cloned().collect()
        } else {
            channels.iter().map(|c| c.to_vec()).collect()
        };
        if list.is_empty() {
            push_header(out, 3);
            out.bulk(b"unsubscribe");
            out.null();
            out.int(0);
        }
        for c in list {
            if self.channels.remove(&c) {
                if let Some(ps) = &self.server {
                    ps.remove(&c);
                }
            }
            push_header(out, 3);
            out.bulk(b"unsubscribe");
            out.bulk(&c);
            out.int(self.channels.len() as i64);
        }
    }

    /// Whether the connection is in subscribed mode.
    pub fn active(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Write `m` if it is for one of our channels.
    pub fn deliver(&self, m: &Message, out: &mut Out) -> bool {
        if !self.channels.contains(&m.0) {
            return false;
        }
        push_header(out, 3);
        out.bulk(b"message");
        out.bulk(&m.0);
        out.bulk(&m.1);
        true
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        if let Some(ps) = &self.server {
            for c in &self.channels {
                ps.remove(c);
            }
        }
    }
}

/// A push (RESP3) or an array (RESP2) of `n` elements.
fn push_header(out: &mut Out, n: usize) {
    match out.proto {
        Proto::V3 => out.buf.extend_from_slice(format!(">{n}\r\n").as_bytes()),
        Proto::V2 => out.array(n),
    }
}
